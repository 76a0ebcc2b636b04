/* The chain walk of trie.put (_chain) compiled: the loop that visits the nodes of a
 * single-writer put, copying the rows where each node stays on the new path and rewriting the
 * row where it leaves it, straight from the visited tables' encodings (spec/trie.md section 4).
 *
 * It is an optional accelerator with exactly the behaviour of the Python loop in trie/put.py
 * (tests compare the two byte for byte): where the Python loop hands over to the general walk,
 * this returns None; where it reaches the terminator position, it returns what the Python end of
 * the walk (_chain_end) needs. It reads nodes and tables only through their attributes and the
 * loader, so it assumes nothing about their classes; anything it does not expect (a type, a
 * malformed encoding) is a hand-over too, never a guess.
 *
 * chain(path, head, head_pointer, load, nodes)
 *     -> None | (out, positions, starts, node, table, own)
 *   path          the new key's terminated digit path (bytes)
 *   head          the author's single head
 *   head_pointer  the encoding of the head's bucket (its pointer's two varints)
 *   load          the loader: (feed, seq) -> node
 *   nodes         a tuple of dicts of nodes by pointer, read before calling load
 * out is the encoding so far, positions and starts its rows and where they start in it (bytes,
 * or tuples past 255). node, table and own are None when the walk ended before the terminator
 * position; otherwise they are the node reached there, its table and the encoding of the bucket
 * pointing at it, for _chain_end.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define TERMINATOR 4

static PyObject *s_path, *s_trie, *s_starts, *s_encoded, *s_positions, *s_forked, *s_index;

/* A growable byte buffer. */
typedef struct {
    unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int buffer_reserve(Buffer *b, Py_ssize_t more)
{
    if (b->size + more <= b->capacity)
        return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 256;
    while (capacity < b->size + more)
        capacity *= 2;
    unsigned char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int buffer_add(Buffer *b, const unsigned char *data, Py_ssize_t length)
{
    if (buffer_reserve(b, length) < 0)
        return -1;
    memcpy(b->data + b->size, data, (size_t)length);
    b->size += length;
    return 0;
}

static int buffer_varint(Buffer *b, Py_ssize_t value)
{
    if (buffer_reserve(b, 10) < 0)
        return -1;
    size_t v = (size_t)value;
    while (v >= 0x80) {
        b->data[b->size++] = (unsigned char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    b->data[b->size++] = (unsigned char)v;
    return 0;
}

/* A table's positions or row starts: bytes, or a tuple of ints past 255. */
typedef struct {
    const unsigned char *bytes;
    PyObject *tuple;
    Py_ssize_t length;
} Numbers;

static int numbers_view(PyObject *object, Numbers *view)
{
    if (PyBytes_CheckExact(object)) {
        view->bytes = (const unsigned char *)PyBytes_AS_STRING(object);
        view->tuple = NULL;
        view->length = PyBytes_GET_SIZE(object);
        return 1;
    }
    if (PyTuple_CheckExact(object)) {
        view->bytes = NULL;
        view->tuple = object;
        view->length = PyTuple_GET_SIZE(object);
        return 1;
    }
    return 0;
}

/* The item at index (in range), or -1 for an item that is not a small non-negative int. */
static Py_ssize_t numbers_at(const Numbers *view, Py_ssize_t index)
{
    if (view->bytes != NULL)
        return view->bytes[index];
    PyObject *item = PyTuple_GET_ITEM(view->tuple, index);
    if (!PyLong_CheckExact(item))
        return -1;
    Py_ssize_t value = PyLong_AsSsize_t(item);
    if (value < 0) {
        PyErr_Clear();
        return -1;
    }
    return value;
}

/* The first index whose item is >= value (the items ascend). */
static Py_ssize_t numbers_bisect(const Numbers *view, Py_ssize_t value)
{
    Py_ssize_t low = 0, high = view->length;
    while (low < high) {
        Py_ssize_t middle = (low + high) / 2;
        if (numbers_at(view, middle) < value)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

/* The index after the varint at data[index], or -1 if it runs past length. */
static Py_ssize_t skip_varint(const unsigned char *data, Py_ssize_t index, Py_ssize_t length)
{
    while (index < length) {
        if (data[index++] < 0x80)
            return index;
    }
    return -1;
}

/* The varint at data[*index] (at most 9 bytes, within length), advancing *index; -1 if not. */
static long long read_varint(const unsigned char *data, Py_ssize_t *index, Py_ssize_t length)
{
    unsigned long long value = 0;
    int shift = 0;
    Py_ssize_t i = *index;
    while (i < length && shift < 63) {
        unsigned char byte = data[i++];
        value |= (unsigned long long)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *index = i;
            return (long long)value;
        }
        shift += 7;
    }
    return -1;
}

static Py_ssize_t varint_size(Py_ssize_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* Where the result's rows start: positions and offsets, ascending, as the walk records them. */
typedef struct {
    Py_ssize_t *positions;
    Py_ssize_t *starts;
    Py_ssize_t count;
    Py_ssize_t capacity;
} Offsets;

static int set_offset(Offsets *o, Py_ssize_t position, Py_ssize_t offset)
{
    if (o->count == o->capacity) {
        Py_ssize_t capacity = o->capacity ? o->capacity * 2 : 32;
        Py_ssize_t *positions = PyMem_Realloc(o->positions, (size_t)capacity * sizeof(Py_ssize_t));
        if (positions == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->positions = positions;
        Py_ssize_t *starts = PyMem_Realloc(o->starts, (size_t)capacity * sizeof(Py_ssize_t));
        if (starts == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->starts = starts;
        o->capacity = capacity;
    }
    o->positions[o->count] = position;
    o->starts[o->count] = offset;
    o->count++;
    return 0;
}

/* values as the tables keep them: bytes when all are below 256, else a tuple of ints */
static PyObject *compact(const Py_ssize_t *values, Py_ssize_t count)
{
    int small = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (values[i] > 0xFF) {
            small = 0;
            break;
        }
    }
    if (small) {
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, count);
        if (bytes == NULL)
            return NULL;
        unsigned char *data = (unsigned char *)PyBytes_AS_STRING(bytes);
        for (Py_ssize_t i = 0; i < count; i++)
            data[i] = (unsigned char)values[i];
        return bytes;
    }
    PyObject *tuple = PyTuple_New(count);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyLong_FromSsize_t(values[i]);
        if (item == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

/* The walk's result: (out, positions, starts, node, table, own); node and table may be None. */
static PyObject *walked(const Buffer *out, const Offsets *offsets, PyObject *node, PyObject *table,
                        PyObject *own)
{
    PyObject *result = PyTuple_New(6);
    if (result == NULL)
        return NULL;
    PyObject *items[3] = {
        PyBytes_FromStringAndSize((const char *)out->data, out->size),
        compact(offsets->positions, offsets->count),
        compact(offsets->starts, offsets->count),
    };
    for (int i = 0; i < 3; i++) {
        if (items[i] == NULL) {
            for (int j = 0; j < 3; j++)
                Py_XDECREF(items[j]);
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, items[i]);
    }
    Py_INCREF(node);
    PyTuple_SET_ITEM(result, 3, node);
    Py_INCREF(table);
    PyTuple_SET_ITEM(result, 4, table);
    Py_INCREF(own);
    PyTuple_SET_ITEM(result, 5, own);
    return result;
}

/* The node at (feed, seq): from the first of the dicts that holds it, else from the loader. */
static PyObject *find(PyObject *nodes, PyObject *load, long long feed, long long seq)
{
    PyObject *pointer = PyTuple_New(2);
    if (pointer == NULL)
        return NULL;
    PyObject *first = PyLong_FromLongLong(feed);
    PyObject *second = first == NULL ? NULL : PyLong_FromLongLong(seq);
    if (second == NULL) {
        Py_XDECREF(first);
        Py_DECREF(pointer);
        return NULL;
    }
    PyTuple_SET_ITEM(pointer, 0, first);
    PyTuple_SET_ITEM(pointer, 1, second);
    Py_ssize_t count = PyTuple_GET_SIZE(nodes);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *found = PyDict_GetItemWithError(PyTuple_GET_ITEM(nodes, i), pointer);
        if (found != NULL) {
            Py_INCREF(found);
            Py_DECREF(pointer);
            return found;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(pointer);
            return NULL;
        }
    }
    PyObject *node = PyObject_CallOneArg(load, pointer);
    Py_DECREF(pointer);
    return node;
}

/* The index after the pointer (two varints) at data[index] of a bucket holding just it; -1 if it
 * runs past length, -2 if its word carries the "more" bit (a bucket of several pointers). */
static Py_ssize_t skip_pointer(const unsigned char *data, Py_ssize_t index, Py_ssize_t length)
{
    if (index >= length)
        return -1;
    if (data[index] & 1)
        return -2;
    index = skip_varint(data, index, length);
    return index < 0 ? -1 : skip_varint(data, index, length);
}

/* Whether a row of the encoding with a pointer word carrying the "more" bit (a bucket of several
 * pointers) starts at one of the indexes [low, high) of starts; -1 if the encoding is malformed. */
static int rows_forked(const unsigned char *data, Py_ssize_t length, const Numbers *starts,
                       Py_ssize_t low, Py_ssize_t high)
{
    for (Py_ssize_t index = low; index < high; index++) {
        Py_ssize_t at = numbers_at(starts, index);
        if (at < 0)
            return -1;
        at = skip_varint(data, at, length);
        if (at < 0 || at >= length)
            return -1;
        unsigned bits = data[at++];
        for (int bucket = 0; bucket < 5; bucket++) {
            if (!(bits >> bucket & 1))
                continue;
            at = skip_pointer(data, at, length);
            if (at < 0)
                return at == -2 ? 1 : -1;
        }
    }
    return 0;
}

/* The return value of a walk that hands over to the general walk. */
#define HAND_OVER() \
    do { \
        result = Py_None; \
        Py_INCREF(result); \
        goto done; \
    } while (0)

static PyObject *chain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "chain takes 5 arguments");
        return NULL;
    }
    PyObject *path_object = args[0];
    PyObject *load = args[3];
    PyObject *nodes = args[4];
    if (!PyTuple_CheckExact(nodes)) {
        PyErr_SetString(PyExc_TypeError, "chain takes the known nodes as a tuple of dicts");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(nodes); i++) {
        if (!PyDict_CheckExact(PyTuple_GET_ITEM(nodes, i))) {
            PyErr_SetString(PyExc_TypeError, "chain takes the known nodes as a tuple of dicts");
            return NULL;
        }
    }
    if (!PyBytes_CheckExact(path_object) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "chain takes the path and the head's pointer as bytes");
        return NULL;
    }
    const unsigned char *path = (const unsigned char *)PyBytes_AS_STRING(path_object);
    Py_ssize_t size = PyBytes_GET_SIZE(path_object);
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "an empty path");
        return NULL;
    }
    Py_ssize_t last = size - 1;

    PyObject *result = NULL;
    Buffer out = {NULL, 0, 0};
    Offsets offsets = {NULL, NULL, 0, 0};
    /* owned references: the node being visited, its path, its table, the table's attributes, and
     * the object holding the bytes of the bucket that points at the node (own) */
    PyObject *node = args[1];
    Py_INCREF(node);
    PyObject *own_holder = args[2];
    Py_INCREF(own_holder);
    const unsigned char *own_bytes = (const unsigned char *)PyBytes_AS_STRING(own_holder);
    Py_ssize_t own_length = PyBytes_GET_SIZE(own_holder);
    PyObject *own = NULL, *table = NULL, *starts_object = NULL, *data_object = NULL;
    PyObject *positions_object = NULL;
    Py_ssize_t start = 0;

    for (;;) {
        Py_CLEAR(own);
        own = PyObject_GetAttr(node, s_path);
        if (own == NULL)
            goto done;
        if (!PyBytes_CheckExact(own))
            HAND_OVER();
        const unsigned char *own_path = (const unsigned char *)PyBytes_AS_STRING(own);
        Py_ssize_t own_size = PyBytes_GET_SIZE(own);
        /* the split: the first position where the node leaves the new path, at most last */
        Py_ssize_t common = own_size < last ? own_size : last;
        Py_ssize_t split = 0;
        while (split < common && own_path[split] == path[split])
            split++;
        if (split < start)
            break; /* a pointer to a node whose path does not start with its bucket's prefix */

        Py_CLEAR(table);
        table = PyObject_GetAttr(node, s_trie);
        if (table == NULL)
            goto done;
        Py_CLEAR(starts_object);
        Py_CLEAR(data_object);
        starts_object = PyObject_GetAttr(table, s_starts);
        if (starts_object == NULL)
            goto done;
        PyObject *forked_object = PyObject_GetAttr(table, s_forked);
        if (forked_object == NULL)
            goto done;
        int forked = PyObject_IsTrue(forked_object);
        Py_DECREF(forked_object);
        if (forked < 0)
            goto done;
        if (starts_object == Py_None || forked) {
            /* not yet indexed, or forked: the encoding and its row starts, computed once */
            Py_CLEAR(starts_object);
            PyObject *indexed = PyObject_CallMethodNoArgs(table, s_index);
            if (indexed == NULL)
                goto done;
            if (!PyTuple_CheckExact(indexed) || PyTuple_GET_SIZE(indexed) != 2) {
                Py_DECREF(indexed);
                HAND_OVER();
            }
            data_object = PyTuple_GET_ITEM(indexed, 0);
            starts_object = PyTuple_GET_ITEM(indexed, 1);
            Py_INCREF(data_object);
            Py_INCREF(starts_object);
            Py_DECREF(indexed);
        } else {
            data_object = PyObject_GetAttr(table, s_encoded);
            if (data_object == NULL)
                goto done;
        }
        Py_CLEAR(positions_object);
        positions_object = PyObject_GetAttr(table, s_positions);
        if (positions_object == NULL)
            goto done;
        Numbers positions, starts;
        if (!PyBytes_CheckExact(data_object) || !numbers_view(positions_object, &positions) ||
            !numbers_view(starts_object, &starts) || positions.length != starts.length)
            HAND_OVER();
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(data_object);
        Py_ssize_t data_length = PyBytes_GET_SIZE(data_object);
        Py_ssize_t count = positions.length;
        Py_ssize_t high = numbers_bisect(&positions, split);
        Py_ssize_t low = high;
        while (low > 0 && numbers_at(&positions, low - 1) >= start)
            low--;
        if (forked) {
            /* the walk reads the rows [low, high] here (the row at split too, if any) */
            Py_ssize_t end = high < count && numbers_at(&positions, high) == split ? high + 1 : high;
            int found = rows_forked(data, data_length, &starts, low, end);
            if (found != 0)
                HAND_OVER();
        }
        if (split > start && low < high) {
            /* the rows where the node stays on the new path, copied whole unless one holds the
             * new path's own digit (empty in an honest table) */
            Py_ssize_t begin = numbers_at(&starts, low);
            Py_ssize_t stop = high < count ? numbers_at(&starts, high) : data_length;
            if (begin < 0 || stop < begin || stop > data_length)
                HAND_OVER();
            Py_ssize_t shift = out.size - begin;
            for (Py_ssize_t index = low; index < high; index++) {
                Py_ssize_t position = numbers_at(&positions, index);
                Py_ssize_t offset = numbers_at(&starts, index);
                if (position < 0 || offset < 0)
                    HAND_OVER();
                Py_ssize_t bits_at = offset + varint_size(position);
                if (bits_at >= data_length || position >= last)
                    HAND_OVER();
                if (data[bits_at] >> path[position] & 1)
                    HAND_OVER();
                if (set_offset(&offsets, position, offset + shift) < 0)
                    goto done;
            }
            if (buffer_add(&out, data + begin, stop - begin) < 0)
                goto done;
        }
        if (split == last) {
            PyObject *pointer_bytes =
                PyBytes_FromStringAndSize((const char *)own_bytes, own_length);
            if (pointer_bytes == NULL)
                goto done;
            result = walked(&out, &offsets, node, table, pointer_bytes);
            Py_DECREF(pointer_bytes);
            goto done;
        }
        if (split >= own_size)
            HAND_OVER(); /* a path without its terminator */
        unsigned digit = own_path[split];
        unsigned target = path[split];
        if (digit > TERMINATOR || target >= TERMINATOR || digit == target)
            HAND_OVER();
        /* the node leaves the new path here: its row there without the bucket we follow, with
         * the node itself in its own digit's bucket */
        if (set_offset(&offsets, split, out.size) < 0)
            goto done;
        if (!(high < count && numbers_at(&positions, high) == split)) {
            /* no row there: just the node */
            if (buffer_varint(&out, split) < 0 || buffer_reserve(&out, 1) < 0)
                goto done;
            out.data[out.size++] = (unsigned char)(1u << digit);
            if (buffer_add(&out, own_bytes, own_length) < 0)
                goto done;
            break;
        }
        Py_ssize_t at = numbers_at(&starts, high);
        if (at < 0)
            HAND_OVER();
        at = skip_varint(data, at, data_length);
        if (at < 0 || at >= data_length)
            HAND_OVER();
        unsigned bits = data[at++];
        if (bits == 0 || bits >= 0x20)
            HAND_OVER();
        Py_ssize_t bucket_start[5] = {0}, bucket_end[5] = {0};
        for (int bucket = 0; bucket < 5; bucket++) {
            if (!(bits >> bucket & 1))
                continue;
            bucket_start[bucket] = at;
            at = skip_pointer(data, at, data_length);
            if (at < 0)
                HAND_OVER(); /* malformed, or several pointers: not a chain row */
            bucket_end[bucket] = at;
        }
        unsigned new_bits = (bits | 1u << digit) & ~(1u << target);
        if (buffer_varint(&out, split) < 0 || buffer_reserve(&out, 1) < 0)
            goto done;
        out.data[out.size++] = (unsigned char)new_bits;
        for (unsigned bucket = 0; bucket < 5; bucket++) {
            int failed = 0;
            if (bucket == target)
                continue;
            if (bucket == digit)
                failed = buffer_add(&out, own_bytes, own_length);
            else if (bits >> bucket & 1)
                failed = buffer_add(&out, data + bucket_start[bucket],
                                    bucket_end[bucket] - bucket_start[bucket]);
            if (failed < 0)
                goto done;
        }
        if (!(bits >> target & 1))
            break; /* nothing to follow */
        /* follow the bucket of the new path's digit */
        Py_ssize_t read = bucket_start[target];
        long long word = read_varint(data, &read, data_length);
        long long seq = word < 0 ? -1 : read_varint(data, &read, data_length);
        if (seq < 0)
            HAND_OVER();
        own_bytes = data + bucket_start[target];
        own_length = bucket_end[target] - bucket_start[target];
        Py_INCREF(data_object);
        Py_SETREF(own_holder, data_object);
        PyObject *next = find(nodes, load, word >> 1, seq);
        if (next == NULL)
            goto done;
        Py_SETREF(node, next);
        start = split + 1;
    }
    result = walked(&out, &offsets, Py_None, Py_None, Py_None);
done:
    PyMem_Free(out.data);
    PyMem_Free(offsets.positions);
    PyMem_Free(offsets.starts);
    Py_DECREF(node);
    Py_DECREF(own_holder);
    Py_XDECREF(own);
    Py_XDECREF(table);
    Py_XDECREF(starts_object);
    Py_XDECREF(data_object);
    Py_XDECREF(positions_object);
    return result;
}


/* check_encoded(data, path, limit) -> True | False | None: the one-pass check of the usual trie
 * table (TrieTable.check_encoded's fast path in trie/table.py, byte for byte the same rules):
 * positions below 2^14 strictly ascending and within the path, bitfields 1..31 not naming the
 * path's own digit (but the terminator's), one pointer per bucket of a feed below 64 and a seq
 * below 2^21. Answers whether every pointer's seq is below limit(feed) (limit called once per
 * feed, in the order the feeds appear, until one pointer is beyond); None hands over to the
 * general path for anything else (which then raises or answers as the Python loop would). */
static PyObject *check_encoded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]))
        Py_RETURN_NONE;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]);
    const unsigned char *path = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t path_length = PyBytes_GET_SIZE(args[1]);
    PyObject *limit = args[2];
    long long bounds[64];
    unsigned char known[64];
    memset(known, 0, sizeof known);
    int within = 1;
    long previous = -1;
    Py_ssize_t i = 0;
    while (i < end) {
        long position = data[i];
        if (position < 0x80) {
            i += 1;
        } else {
            if (i + 1 >= end)
                Py_RETURN_NONE;
            unsigned second = data[i + 1];
            if (!(0 < second && second < 0x80))
                Py_RETURN_NONE;
            position = (position & 0x7F) | ((long)second << 7);
            i += 2;
        }
        if (i >= end)
            Py_RETURN_NONE;
        unsigned bits = data[i];
        if (!(previous < position && position < path_length && 0 < bits && bits < 0x20))
            Py_RETURN_NONE;
        unsigned own = path[position];
        if (own != TERMINATOR && own < 5 && ((bits >> own) & 1))
            Py_RETURN_NONE;
        if (own > TERMINATOR)
            Py_RETURN_NONE;
        previous = position;
        i += 1;
        for (int bucket = 0; bucket < 5; bucket++) {
            if (!((bits >> bucket) & 1))
                continue;
            if (i + 1 >= end)
                Py_RETURN_NONE;
            unsigned word = data[i];
            if (word >= 0x80 || (word & 1))
                Py_RETURN_NONE;
            long long seq = data[i + 1];
            if (seq < 0x80) {
                i += 2;
            } else {
                if (i + 2 >= end)
                    Py_RETURN_NONE;
                unsigned second = data[i + 2];
                if (0 < second && second < 0x80) {
                    seq = (seq & 0x7F) | ((long long)second << 7);
                    i += 3;
                } else if (second >= 0x80 && i + 3 < end && 0 < data[i + 3] && data[i + 3] < 0x80) {
                    seq = (seq & 0x7F) | ((long long)(second & 0x7F) << 7) |
                          ((long long)data[i + 3] << 14);
                    i += 4;
                } else {
                    Py_RETURN_NONE;
                }
            }
            if (within) {
                unsigned feed = word >> 1;
                if (!known[feed]) {
                    PyObject *number = PyLong_FromUnsignedLong(feed);
                    if (number == NULL)
                        return NULL;
                    PyObject *answer = PyObject_CallOneArg(limit, number);
                    Py_DECREF(number);
                    if (answer == NULL)
                        return NULL;
                    int overflow = 0;
                    long long bound = PyLong_Check(answer)
                        ? PyLong_AsLongLongAndOverflow(answer, &overflow) : -1;
                    int bad = !PyLong_Check(answer) || (bound == -1 && PyErr_Occurred());
                    Py_DECREF(answer);
                    if (bad) {
                        PyErr_Clear();
                        Py_RETURN_NONE;  /* the general path compares whatever limit gave */
                    }
                    if (overflow > 0)
                        bound = (long long)1 << 62;  /* beyond any seq read here */
                    else if (overflow < 0)
                        bound = -1;
                    bounds[feed] = bound;
                    known[feed] = 1;
                }
                if (seq >= bounds[feed])
                    within = 0;
            }
        }
    }
    return PyBool_FromLong(within);
}

static PyMethodDef methods[] = {
    {"chain", (PyCFunction)(void (*)(void))chain, METH_FASTCALL,
     "chain(path, head, head_pointer, load, nodes): the loop of trie.put._chain (see the module)."},
    {"check_encoded", (PyCFunction)(void (*)(void))check_encoded, METH_FASTCALL,
     "check_encoded(data, path, limit): TrieTable.check_encoded's one-pass check, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "trie._chain",
    "The chain walk of a single-writer put and the one-pass check of a received trie table, "
    "compiled (optional accelerators of trie.put and trie.table).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__chain(void)
{
    if (!(s_path = PyUnicode_InternFromString("path")) ||
        !(s_trie = PyUnicode_InternFromString("trie")) ||
        !(s_starts = PyUnicode_InternFromString("_starts")) ||
        !(s_encoded = PyUnicode_InternFromString("_encoded")) ||
        !(s_positions = PyUnicode_InternFromString("_positions")) ||
        !(s_forked = PyUnicode_InternFromString("_forked")) ||
        !(s_index = PyUnicode_InternFromString("_index")))
        return NULL;
    return PyModule_Create(&module_definition);
}
