"""Replication of a database's feeds between two replicas: the sans-I/O protocol state machine.

This module owns the session logic of ``spec/protocol.md``: a :class:`Connection` takes the bytes
a peer sent (:meth:`Connection.receive_data`) and produces the bytes to send back
(:meth:`Connection.data_to_send`), with no sockets, threads or event loop, so the same code runs
joined in memory (:func:`replicate`) or over any transport. It talks to its database through the
:class:`~hyperdb.replication.port.Replica` port: which feeds this side offers (authorized here,
at their signed lengths), which it accepts, how much of each it stores, reading blocks with a
proof, and ingesting a peer's blocks (which verifies signature, proof and records before storing
anything).

A session: both sides send ``hello``; once a side has checked the peer's hello it announces its
feeds (``have``), requests the ranges it lacks of the feeds it wants (at most a few requests in
flight per feed and per connection, at most ``max_request_blocks`` blocks each), answers the
peer's requests in order with ``data`` messages of bounded size, and re-announces whenever its
offer grows (data arrived, or :meth:`Connection.notify_local_change`). Feeds it did not want may
become wanted as data arrives (an authorization inside it); they are then requested too. A feed
is requested only up to the length this side accepts of it (the port's ``wanted_length``: a
revoked writer's cut-off), read again whenever requests are scheduled; a feed stored up to that
length is not requested further however much the peer offers, until the limit grows (data
arrived, or :meth:`Connection.notify_local_change`). When a side has nothing outstanding it says
so (``idle``, with how many of the peer's messages it had processed); both sides are
:attr:`~Connection.synced` when each has said so after the last message that could change the
other's state. A non-live session is then :attr:`~Connection.finished`.
The wire format itself is :mod:`hyperdb.replication.wire`. With the feature ``blobs`` the
session carries blobs too (:mod:`hyperdb.replication.blob_exchange` holds their state: wants and
their answers, chunk requests, serving); blob messages count for the session's end like have,
request and data, and a side is not idle while blob wants, requests or answers are pending.

A fork (a writer's key signed two histories: :class:`~hyperdb.errors.ForkDetected` from the
replica, which has recorded it) does not end the session: that feed is frozen for the rest of it
(no more requests; answers still due to requests already sent are verified and dropped; the
peer's later offers of it are ignored) and every other feed goes on. Any other failure of the
peer's data (a signature or proof that does not verify, for any feed) still ends it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from operator import itemgetter

from hyperdb.errors import (
    Closed,
    ForkDetected,
    HyperDBError,
    IdentityError,
    InvalidArgument,
    ProtocolError,
    ProtocolVersionError,
)
from hyperdb.feed.feed import MAX_BLOCK_SIZE, verify_proof
from hyperdb.model.identity import BINDING_SIZE, verify_identity
from hyperdb.primitives import crypto
from hyperdb.replication.blob_exchange import BlobExchange
from hyperdb.replication.blob_messages import BLOB_MESSAGES
from hyperdb.replication.extensions import ExtensionSession
from hyperdb.replication.messages_v2 import (
    FEATURE_BLOBS,
    FEATURE_EXTENSIONS,
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Extension,
    ExtensionsAdd,
    Identify,
    ReceiptIndex,
    Receipts,
    feature_names,
)
from hyperdb.replication.port import Replica
from hyperdb.replication.receipt_exchange import ReceiptExchange
from hyperdb.replication.wire import (
    MAX_HAVE_ENTRIES,
    MAX_OUTSTANDING_REQUESTS,
    MAX_REQUEST_BLOCKS,
    MAX_SESSION_FEEDS,
    NONCE_SIZE,
    VERSION,
    VERSIONS,
    Data,
    Error,
    FrameDecoder,
    Have,
    Hello,
    Idle,
    Message,
    Request,
    decode_message,
    encode_frame,
    error_frame,
    message_name,
)

DEFAULT_MAX_REQUESTS = 16
DEFAULT_MAX_REQUESTS_PER_FEED = 4
#: Soft limit on the block bytes of one data message (a single larger block is sent alone).
DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ROUNDS = 100_000
#: The features this implementation of version 2 supports (``messages_v2.FEATURE_*``).
SUPPORTED_FEATURES = FEATURE_FORK_ROOTS | FEATURE_RECEIPTS | FEATURE_EXTENSIONS | FEATURE_BLOBS
#: Extension messages received and not yet taken (``take_extension_messages``) above which a
#: transport stops reading from the peer until they are taken.
MAX_PENDING_EXTENSION_MESSAGES = 1024


ProgressCallback = Callable[[bytes, int, int], None]
#: The messages counted for termination (``seen``): they change what the other side must do.
_COUNTED = (Have, Request, Data, *BLOB_MESSAGES)


@dataclass(slots=True)
class _Range:
    """A request in progress: blocks ``[cursor, end)`` of ``feed`` are still to come."""

    feed: bytes
    start: int
    end: int
    cursor: int
    #: asked only to compare the peer's signed tree with this side's (feature fork-roots): the
    #: answer is checked against the stored feed, never stored
    check: bool = False


class Connection:
    """One side of a replication session with one peer, as a state machine over bytes.

    ``initiator`` names the side that opened the transport (it matters to the transport's
    handshake; the messages themselves are symmetric). ``live`` keeps the session open after the
    two sides are synced, to carry later changes (announced with :meth:`notify_local_change`).
    ``max_request_blocks``, ``max_requests`` and ``max_requests_per_feed`` (default: 4, at most
    ``max_requests``) bound what this side asks for at once; ``max_message_bytes`` bounds the
    blocks of each data message it sends.
    ``on_progress(feed key, stored blocks, blocks the peer offers)`` is called after each data
    message this side stores (the blocks offered counted only up to the length this side accepts
    of that feed). ``upload=False`` offers the peer nothing; ``download=False`` requests nothing.

    ``version`` is the protocol version this side speaks (2; 1 only to talk to a peer that has not
    upgraded, which both sides must choose: a hello of another version is a
    :class:`~hyperdb.errors.ProtocolVersionError`). In version 2 each side proves its writer key
    right after its hello (an identify message signed over the session's ``binding``: the Noise
    handshake hash over TCP, given later with :meth:`bind`; 64 random bytes both sides share in
    memory); :attr:`peer_key` is the key the peer proved (None: it proved none, or version 1).
    A connection never bound uses the two hellos' nonces as its binding (``bind_nonces``), which
    suits in-memory sessions only: a party running two sessions can relay a proof between them.

    Any error (a protocol violation or bad data from the peer, or a failure of the local
    replica) closes the connection: the exception propagates to the caller, a final ``error``
    message for the peer is left in :meth:`data_to_send`, and further input raises
    :class:`~hyperdb.errors.Closed`. The one exception is a fork: the feed is frozen, its key
    added to :attr:`forks`, and the session goes on (see the module docstring).
    """

    def __init__(
        self,
        replica: Replica,
        *,
        initiator: bool,
        live: bool = False,
        max_request_blocks: int = MAX_REQUEST_BLOCKS,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_requests_per_feed: int | None = None,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        on_progress: ProgressCallback | None = None,
        upload: bool = True,
        download: bool = True,
        version: int = VERSION,
        binding: bytes | None = None,
        features: int = SUPPORTED_FEATURES,
        extensions: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if version not in VERSIONS:
            raise InvalidArgument(f"protocol version must be one of {VERSIONS}, got {version!r}")
        if type(features) is not int or features & ~SUPPORTED_FEATURES:
            raise InvalidArgument(f"features must be bits of {SUPPORTED_FEATURES:#x}")
        _check_limit("max_request_blocks", max_request_blocks, MAX_REQUEST_BLOCKS)
        _check_limit("max_requests", max_requests, MAX_OUTSTANDING_REQUESTS)
        if max_requests_per_feed is None:
            max_requests_per_feed = min(DEFAULT_MAX_REQUESTS_PER_FEED, max_requests)
        _check_limit("max_requests_per_feed", max_requests_per_feed, max_requests)
        _check_limit("max_message_bytes", max_message_bytes, MAX_BLOCK_SIZE)
        if not isinstance(upload, bool) or not isinstance(download, bool):
            raise InvalidArgument("upload and download are booleans")
        self.initiator = initiator
        self.live = live
        self.upload = upload
        self.download = download
        self.messages_sent: Counter[str] = Counter()
        self.messages_received: Counter[str] = Counter()
        self.blocks_sent = 0
        self.blocks_received = 0  # blocks in the data messages received (stored or already here)
        self._replica = replica
        self._discovery_key = replica.discovery_key
        self._max_request_blocks = max_request_blocks
        self._max_requests = max_requests
        self._max_requests_per_feed = max_requests_per_feed
        self._max_message_bytes = max_message_bytes
        self._on_progress = on_progress
        self._decoder = FrameDecoder()
        self._out: deque[bytes] = deque()  # encoded frames, in order
        self._closed = False
        self._peer_hello = False
        self.version = version
        self._features = features if version >= 2 else 0
        #: Features on for this session (both hellos set them), once the peer's hello arrived.
        self.features = 0
        #: The writer key the peer proved (version 2), None until then or if it proved none.
        self.peer_key: bytes | None = None
        #: The role the peer claimed in its identify (0 none, 1 seeder, 2 writer, 3 owner).
        self.peer_claimed_role: int | None = None
        #: The peer proved this replica's own writer key: one directory is a copy of the other.
        self.same_key = False
        self._identified = version < 2  # the peer's identify has been checked (or needs none)
        #: Receipts exchanged in this session (feature receipts).
        self.receipts = ReceiptExchange(replica)
        #: Extension messages (feature extensions): names, budgets, counters.
        self.extensions = ExtensionSession(extensions, clock=clock)
        self._extension_inbox: deque[tuple[str, bytes]] = deque()
        #: Blobs exchanged in this session (feature blobs).
        self.blobs = BlobExchange(replica, upload=upload, download=download)
        self._binding: bytes | None = None
        # what this side asked for: per feed, its requests in the order sent
        self._pulls: dict[bytes, deque[_Range]] = {}
        self._pull_count = 0
        # what the peer asked for, answered in order (lazily, in data_to_send)
        self._serving: deque[_Range] = deque()
        self._peer_offer: dict[bytes, int] = {}
        self._announced: dict[bytes, int] = {}
        self._unwanted: set[bytes] = set()  # offered by the peer, not wanted here (yet)
        self._lagging: set[bytes] = set()  # wanted feeds that may have ranges left to request
        # wanted feeds the peer offers beyond what this side accepts of them, all of that
        # requested: lagging again if the limit grows (on a local change)
        self._limited: set[bytes] = set()
        self._frozen: set[bytes] = set()  # forked feeds: never requested again in this session
        self._checked: set[bytes] = set()  # feeds a check request was sent for (one each)
        #: Keys of the feeds frozen during this session because their writer forked, in the order
        #: found (the replica holds the evidence).
        self.forks: list[bytes] = []
        self._stored = False  # data was stored during the current receive_data call
        # termination (spec/protocol.md, "Idle and the end of a session")
        self._sent = 0  # have, request and data messages sent
        self._received = 0  # and received
        self._dirty = True  # this side's state changed since its last idle message
        self._peer_idle: int | None = None  # the peer's latest message was idle, having seen this
        self._nonce = crypto.random_bytes(NONCE_SIZE)
        if version == 1:
            self._send(Hello(self._discovery_key, version=1))
        else:
            hello = Hello(
                self._discovery_key,
                version=version,
                features=self._features,
                extensions=self.extensions.local_names,
                nonce=self._nonce,
            )
            self._send(hello)
        if binding is not None:
            self.bind(binding)

    def bind(self, binding: bytes) -> None:
        """Give the session's channel binding (64 bytes): the identify message can then be sent.
        Only once, before the peer's identify arrives; nothing to do in version 1."""
        if self._binding is not None:
            raise InvalidArgument("the connection is already bound to its channel")
        if not isinstance(binding, bytes) or len(binding) != BINDING_SIZE:
            raise InvalidArgument(f"a channel binding is {BINDING_SIZE} bytes")
        self._binding = binding
        if self.version < 2 or self._closed:
            return
        proof = self._replica.identify(binding, self.initiator)
        if proof is None:
            self._send(Identify(0))
        else:
            key, signature, role = proof
            self._send(Identify(role, key, signature))

    @property
    def identified(self) -> bool:
        """The peer's hello and (version 2) identify have been checked: :attr:`peer_key` is
        final."""
        return self._peer_hello and self._identified

    @property
    def peer_label(self) -> str:
        """The peer as the replica names it: its proved writer key in hex, or "anonymous"."""
        return "anonymous" if self.peer_key is None else self.peer_key.hex()

    @property
    def feature_names(self) -> frozenset[str]:
        """The names of the features on for this session."""
        return feature_names(self.features)

    # --- extension messages -----------------------------------------------------------------------

    def send_extension(self, name: str, payload: bytes) -> bool:
        """Queue ``payload`` for the peer's handler of extension ``name`` (one this side listed).
        False when the peer does not handle that name (nothing sent). Raises
        :class:`~hyperdb.errors.Backpressure` when the session's send budget (rate, or bytes
        queued) is spent, InvalidArgument for a name this side did not list or a payload over
        64 KiB. Extension traffic never counts for the session's termination."""
        self._check_open()
        if not self.features & FEATURE_EXTENSIONS:
            return False
        prepared = self.extensions.prepare(name, payload)
        if prepared is None:
            return False
        self._send(Extension(*prepared))
        return True

    def add_extensions(self, names: Sequence[str]) -> None:
        """Handle more extension names in this session (the peer is told at once)."""
        self._check_open()
        added = self.extensions.add_local_names(names)
        if self.features & FEATURE_EXTENSIONS:
            self._send(ExtensionsAdd(added))

    def take_extension_messages(self) -> list[tuple[str, bytes]]:
        """The extension messages received since last taken: (name, payload) in order."""
        taken = list(self._extension_inbox)
        self._extension_inbox.clear()
        return taken

    @property
    def reading(self) -> bool:
        """False while too many extension messages wait to be taken: a transport should stop
        reading from the peer until they are (its rate is bounded, its buffering too)."""
        return len(self._extension_inbox) < MAX_PENDING_EXTENSION_MESSAGES

    # --- state ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> bool:
        """This side has nothing in flight, nothing to request and nothing to answer."""
        return (
            self._peer_hello
            and not self._closed
            and not self._pull_count
            and not self._lagging
            and not self._serving
            and not self.blobs.busy
        )

    @property
    def synced(self) -> bool:
        """Both sides are idle, have told each other after the last message that could change
        that, and nothing is left to send: each holds what it wants of the other's offer."""
        return (
            self.idle
            and not self._dirty
            and not self._out
            and self._peer_idle is not None
            and self._peer_idle == self._sent
        )

    @property
    def finished(self) -> bool:
        """A non-live session is over: the transport may be closed."""
        return not self.live and self.synced

    @property
    def wants_to_send(self) -> bool:
        """:meth:`data_to_send` would return something."""
        return bool(self._out) or ((bool(self._serving) or self.blobs.serving) and not self._closed)

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete incoming frame (at most one frame and its header)."""
        return self._decoder.buffered

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes from the peer, however they are chunked.

        Raises :class:`~hyperdb.errors.ProtocolError` when the peer breaks the protocol (or sent
        an error), and lets the replica's :class:`~hyperdb.errors.VerificationError` through;
        either way the connection is closed. A :class:`~hyperdb.errors.ForkDetected` is not
        raised: the feed is frozen and the session goes on.
        """
        self._check_open()
        try:
            for body in self._decoder.feed(data):
                message = decode_message(body)
                self.messages_received[message_name(message)] += 1
                self._handle(message)
            if self._stored:  # once per call, not per data message: both steps scan every feed
                self._stored = False
                self._local_change()
            self._schedule()
            self._maybe_idle()
        except _PeerClosed as exc:
            self._fail(exc, notify=False)
            raise ProtocolError(str(exc)) from None
        except BaseException as exc:
            self._fail(exc)
            raise

    def receive_eof(self) -> None:
        """The peer closed the transport. Raises ProtocolError if it did so inside a frame."""
        if self._closed:
            return
        truncated = not self._decoder.at_boundary
        self._fail(ProtocolError("the peer closed the connection"), notify=False)
        if truncated:
            raise ProtocolError("the peer closed the connection in the middle of a frame")

    def notify_local_change(self) -> None:
        """The local replica changed (an append, an authorization): announce what it now offers
        and request feeds that became wanted."""
        self._check_open()
        try:
            self._local_change()
            self._schedule()
            self._maybe_idle()
        except BaseException as exc:
            self._fail(exc)
            raise

    def close(self) -> None:
        """End the session locally (nothing more is sent or accepted)."""
        if not self._closed:
            self._fail(Closed("the connection was closed"), notify=False)

    # --- output -----------------------------------------------------------------------------------

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """The bytes to send to the peer now: every queued message, then answers to the peer's
        requests until about ``max_bytes`` (default: ``max_message_bytes``) are gathered. Call
        again while :attr:`wants_to_send`. After an error this returns the final ``error``
        message once, then nothing."""
        budget = self._max_message_bytes if max_bytes is None else max_bytes
        out = bytearray()
        while self._out:
            out += self._out.popleft()
        self.extensions.drained_all()  # what was queued has left this connection
        if self._closed:
            return bytes(out)
        try:
            blobs = self.blobs
            while (self._serving or blobs.serving) and len(out) < budget:
                if self._serving:  # feeds and blobs take turns
                    self._serve_one()
                    out += self._out.popleft()
                if blobs.serving and len(out) < budget:
                    self._send(blobs.serve_one())
                    out += self._out.popleft()
            self._maybe_idle()
        except BaseException as exc:
            self._fail(exc)
            raise
        while self._out:
            out += self._out.popleft()
        return bytes(out)

    # --- messages ---------------------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, Error):
            raise _PeerClosed(f"the peer ended the session: {message.reason}")
        if not self._peer_hello:
            if not isinstance(message, Hello):
                raise ProtocolError(f"expected hello first, got {message_name(message)}")
            if message.version != self.version:
                raise ProtocolVersionError(
                    f"the peer speaks version {message.version} of the hyperdb protocol, this "
                    f"replica speaks version {self.version}"
                )
            if message.discovery_key != self._discovery_key:
                raise ProtocolError("the peer is replicating another database (discovery key)")
            self._peer_hello = True
            self.features = message.features & self._features
            if self._binding is None and self.version >= 2:  # no transport binding: the nonces
                self.bind(bind_nonces(self._nonce, message.nonce, self.initiator))
            if self.features & FEATURE_EXTENSIONS:
                self.extensions.set_peer_names(message.extensions)
            if self.features & FEATURE_RECEIPTS:  # its index and own receipt, before any have
                for opening in self.receipts.opening():
                    self._send(opening)
            if self.features & FEATURE_BLOBS:
                self.blobs.start()  # its wants go with the first _schedule
            self._announce()
            return
        if isinstance(message, Hello):
            raise ProtocolError("a second hello")
        if isinstance(message, Identify):
            self._on_identify(message)
            return
        if not self._identified:
            raise ProtocolError(f"expected identify after hello, got {message_name(message)}")
        if isinstance(message, (Extension, ExtensionsAdd)):
            if not self.features & FEATURE_EXTENSIONS:
                raise ProtocolError(
                    f"an {message_name(message)} message, but extensions were not negotiated"
                )
            if isinstance(message, ExtensionsAdd):
                self.extensions.add_peer_names(message.names)
                return
            name = self.extensions.receive(message.index, message.payload)
            if name is not None:
                self._extension_inbox.append((name, message.payload))
            return  # not counted: application traffic never holds a session open
        if isinstance(message, (Receipts, ReceiptIndex)):
            if not self.features & FEATURE_RECEIPTS:
                raise ProtocolError(
                    f"a {message_name(message)} message, but receipts were not negotiated"
                )
            if isinstance(message, ReceiptIndex):
                self.receipts.on_index(message)
            else:
                self.receipts.on_receipts(message, self.peer_key)
            return  # not counted: receipts never hold a session open or make it dirty
        if isinstance(message, BLOB_MESSAGES) and not self.blobs.active:
            raise ProtocolError(f"a {message_name(message)} message, but blobs were not negotiated")
        if isinstance(message, Idle):
            if message.seen > self._sent:
                raise ProtocolError(
                    f"the peer claims to have seen {message.seen} messages, {self._sent} were sent"
                )
            self._peer_idle = message.seen
            return
        self._received += 1
        self._peer_idle = None
        self._dirty = True
        if isinstance(message, Have):
            self._on_have(message)
        elif isinstance(message, Request):
            self._on_request(message)
        elif isinstance(message, Data):
            self._on_data(message)
        elif isinstance(message, BLOB_MESSAGES):
            for answer in self.blobs.receive(message, self.peer_label):
                self._send(answer)
        else:
            raise ProtocolError(f"a {message_name(message)} message out of turn")

    def _on_identify(self, message: Identify) -> None:
        if self.version < 2:
            raise ProtocolError("an identify message on a version-1 session")
        if self._identified:
            raise ProtocolError("a second identify")
        self.peer_claimed_role = message.role
        if message.key is not None and message.signature is not None:
            if self._binding is None:  # the transport binds before any message can arrive
                raise HyperDBError("the connection received identify before it was bound")
            if not verify_identity(
                self._discovery_key,
                message.key,
                not self.initiator,
                message.role,
                self._binding,
                message.signature,
            ):
                raise IdentityError(
                    "the peer's identity proof does not verify (forged, or relayed from "
                    "another session)"
                )
            self.peer_key = message.key
            self.same_key = message.key == self._replica.local_key
        self._identified = True

    def _on_have(self, message: Have) -> None:
        roots = message.roots
        if (roots is not None) != bool(self.features & FEATURE_FORK_ROOTS):
            raise ProtocolError(
                "a have message "
                + ("with tree hashes" if roots is not None else "without tree hashes")
                + " on a session whose features call for the other form"
            )
        offer = self._peer_offer
        feeds = dict(message.feeds)  # the decoder checked that the keys ascend: no duplicates
        new: Collection[bytes] = feeds.keys()
        if not offer.keys().isdisjoint(new):  # announcements of known feeds must grow
            for feed, length in message.feeds:
                previous = offer.get(feed)
                if previous is None:
                    continue
                if length <= previous:
                    raise ProtocolError(
                        f"the peer announced feed {feed.hex()[:16]} at {length} after {previous}"
                    )
                if feed not in self._unwanted:
                    self._lagging.add(feed)  # _schedule compares with what is requested and stored
            new = feeds.keys() - offer.keys()
        if len(offer) + len(new) > MAX_SESSION_FEEDS:
            raise ProtocolError(f"the peer announced more than {MAX_SESSION_FEEDS} feeds")
        if roots is not None:  # the announcement is valid: compare what both sides hold
            self._compare_roots(message.feeds, roots)
        offer.update(feeds)
        replica = self._replica
        wanted = replica.wanted if self.download else _nothing_wanted
        announced = self._announced.get
        stored = replica.stored_length
        for feed in new:
            if not wanted(feed):
                self._unwanted.add(feed)
                continue
            # A new feed has nothing requested yet: it lags if fewer blocks are stored here than
            # the peer offers. This side stores at least what it announced (and stored lengths
            # never decrease), so between replicas in sync the replica is not even asked.
            length = feeds[feed]
            if announced(feed, 0) < length and stored(feed) < length:
                self._lagging.add(feed)

    def _compare_roots(
        self, feeds: tuple[tuple[bytes, int], ...], roots: tuple[bytes, ...]
    ) -> None:
        """Compare the peer's tree hash of each announced length with this side's at the same
        length, where it holds that many blocks; on a difference ask for the length's last block
        (its answer carries the peer's signature of that length) to prove the fork."""
        replica = self._replica
        stored = replica.stored_length
        for (feed, length), root in zip(feeds, roots, strict=True):
            if feed in self._frozen or feed in self._checked or stored(feed) < length:
                continue  # a feed this side holds less of is fetched, and checked, as data
            mine = replica.tree_hash(feed, length)
            if mine is None or mine == root:
                continue
            self._checked.add(feed)
            queue = self._pulls.setdefault(feed, deque())
            queue.append(_Range(feed, length - 1, length, length - 1, check=True))
            self._pull_count += 1
            self._send(Request(feed, length - 1, length))

    def _on_request(self, message: Request) -> None:
        offered = self._announced.get(message.feed, 0)
        if message.end > offered:
            raise ProtocolError(
                f"request for blocks [{message.start}, {message.end}) of feed "
                f"{message.feed.hex()[:16]}, offered up to {offered}"
            )
        if len(self._serving) >= MAX_OUTSTANDING_REQUESTS:
            raise ProtocolError(f"more than {MAX_OUTSTANDING_REQUESTS} requests outstanding")
        self._serving.append(_Range(message.feed, message.start, message.end, message.start))

    def _on_data(self, message: Data) -> None:
        feed = message.feed
        name = feed.hex()[:16]
        queue = self._pulls.get(feed)
        if not queue:
            if not self._replica.wanted(feed):
                raise ProtocolError(f"data for feed {name}, which this replica does not accept")
            raise ProtocolError(f"data for feed {name}, which was not requested")
        pull = queue[0]
        if message.start != pull.cursor or message.end > pull.end:
            raise ProtocolError(
                f"data [{message.start}, {message.end}) of feed {name} does not continue the "
                f"request [{pull.start}, {pull.end}) at {pull.cursor}"
            )
        if pull.check:
            self._on_check(message, queue)
            return
        frozen = feed in self._frozen
        if not frozen and not self._replica.wanted(feed):
            # requested while wanted, no longer wanted: its fork was found meanwhile (by another
            # session of this replica). The peer only answered what was asked.
            self._freeze(feed)
            frozen = True
        stored = False
        blocks = list(message.blocks)
        if frozen:
            # not stored, but still the writer's: data that does not verify ends the session
            verify_proof(feed, message.start, blocks, message.proof)
        else:
            try:
                stored = self._replica.ingest(feed, message.start, blocks, message.proof)
            except ForkDetected as fork:
                # a proven fork (two valid signatures), recorded by the replica: not the peer's
                # fault, and no reason to stop the other feeds
                self._freeze(feed)
                frozen = True
                if fork.evidence is None:  # refused unread: the feed was frozen already
                    verify_proof(feed, message.start, blocks, message.proof)
        self.blocks_received += len(message.blocks)
        pull.cursor = message.end
        if pull.cursor == pull.end:
            queue.popleft()
            self._pull_count -= 1
            if not queue:
                del self._pulls[feed]
        if frozen:
            return  # the answers still due to its requests are verified and dropped as they come
        self._lagging.add(feed)
        if self._on_progress is not None:
            offered = self._peer_offer[feed]
            limit = self._replica.wanted_length(feed)
            if limit is not None and limit < offered:
                offered = limit
            self._on_progress(feed, self._replica.stored_length(feed), offered)
        if stored:
            self._stored = True

    def _on_check(self, message: Data, queue: deque[_Range]) -> None:
        """The answer to a check request: the peer's signed tree of the length it announced,
        which differs from this side's (or the peer lied about it)."""
        feed = message.feed
        queue.popleft()
        self._pull_count -= 1
        if not queue:
            del self._pulls[feed]
        self.blocks_received += len(message.blocks)
        if feed in self._frozen:
            verify_proof(feed, message.start, list(message.blocks), message.proof)
            return
        if not self._replica.check_fork(feed, message.start, list(message.blocks), message.proof):
            raise ProtocolError(
                f"the peer announced a tree hash of feed {feed.hex()[:16]} at length "
                f"{message.end} that its data does not prove"
            )
        self._freeze(feed)

    def _freeze(self, feed: bytes) -> None:
        """Stop wanting a forked feed for the rest of the session."""
        self._frozen.add(feed)
        self.forks.append(feed)
        self._lagging.discard(feed)
        self._limited.discard(feed)
        self._unwanted.add(feed)  # later offers of it are ignored

    # --- decisions --------------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._out.append(encode_frame(message))
        self.messages_sent[message_name(message)] += 1
        if isinstance(message, _COUNTED):
            self._sent += 1
            self._dirty = True

    def _announce(self) -> None:
        """Send a have message for every offered feed that is new or grew since last announced
        (nothing at all when this side does not upload)."""
        if not self._peer_hello or not self.upload:
            return
        offer = self._replica.offered()
        announced = self._announced
        if announced:  # only what is new or changed, then only what grew
            changes = [
                item
                for item in offer.items() - announced.items()
                if item[1] > announced.get(item[0], 0)
            ]
        else:
            changes = list(offer.items())
            if changes and min(offer.values()) < 1:
                changes = [item for item in changes if item[1] > 0]
        if not changes:
            return
        changes.sort(key=itemgetter(0))  # by key alone (unique): cheaper than comparing pairs
        with_roots = bool(self.features & FEATURE_FORK_ROOTS)
        tree_hash = self._replica.tree_hash
        for first in range(0, len(changes), MAX_HAVE_ENTRIES):
            feeds = tuple(changes[first : first + MAX_HAVE_ENTRIES])
            if with_roots:
                roots = tuple(tree_hash(feed, length) or bytes(32) for feed, length in feeds)
                self._send(Have(feeds, roots))
            else:
                self._send(Have(feeds))
        announced.update(changes)

    def _local_change(self) -> None:
        self._announce()
        self.blobs.local_change()
        if not self.download:
            return
        wanted = [
            feed
            for feed in self._unwanted
            if feed not in self._frozen and self._replica.wanted(feed)
        ]
        self._unwanted.difference_update(wanted)
        self._lagging.update(wanted)
        if self._limited:  # their limits may have grown: _schedule reads them again
            self._lagging.update(self._limited)
            self._limited.clear()

    def _schedule(self) -> None:
        """Request what is missing of the wanted feeds the peer offers, up to the length this side
        accepts of each (read now: it can change), within the limits on requests."""
        if not self._peer_hello:
            return
        wanted_length = self._replica.wanted_length
        for feed in sorted(self._lagging):
            target = self._peer_offer[feed]
            limit = wanted_length(feed)
            limited = False
            if limit is not None and limit < target:
                target, limited = limit, True
            queue = self._pulls.get(feed)
            position = self._replica.stored_length(feed)
            if queue and queue[-1].end > position:  # a check request ends at or below it
                position = queue[-1].end
            while (
                position < target
                and self._pull_count < self._max_requests
                and (queue is None or len(queue) < self._max_requests_per_feed)
            ):
                end = min(position + self._max_request_blocks, target)
                if queue is None:
                    queue = self._pulls[feed] = deque()
                queue.append(_Range(feed, position, end, position))
                self._pull_count += 1
                self._send(Request(feed, position, end))
                position = end
            if position >= target:
                self._lagging.discard(feed)  # answers to its requests put it back
                if limited:
                    self._limited.add(feed)  # and so does a local change (the limit may grow)
        for message in self.blobs.schedule():
            self._send(message)

    def _maybe_idle(self) -> None:
        if self._dirty and self.idle:
            self._dirty = False
            if self.features & FEATURE_RECEIPTS:
                # what this side has applied, committed, before it says it is done: the peer
                # holds the receipt by the time it sees this side idle
                for receipts in self.receipts.before_idle(self.peer_key):
                    self._send(receipts)
            self._send(Idle(self._received))

    def notify_receipts(self) -> None:
        """Receipts were stored here by another session: forward what the peer lacks (live)."""
        if self._closed or not self._peer_hello or not self.features & FEATURE_RECEIPTS:
            return
        try:
            for receipts in self.receipts.gossip(self.peer_key):
                self._send(receipts)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _serve_one(self) -> None:
        """Queue one data message answering the oldest request: as many blocks as fit in the
        message size limit (a single larger block goes alone)."""
        serving = self._serving[0]
        feed, start, end = serving.feed, serving.cursor, serving.end
        limit = self._max_message_bytes
        blocks, proof = self._replica.read(feed, start, end, limit)
        cut = start + len(blocks)
        if not blocks or cut > end:
            raise HyperDBError(f"the replica read the wrong blocks of feed {feed.hex()[:16]}")
        if len(blocks) != cut - start or proof.start != start or proof.end != cut:
            raise HyperDBError(f"the replica read the wrong blocks of feed {feed.hex()[:16]}")
        serving.cursor = cut
        self.blocks_sent += len(blocks)
        if cut == end:
            self._serving.popleft()
        self._send(Data.from_proof(feed, blocks, proof))

    # --- errors -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the replication connection is closed")

    def _fail(self, exc: BaseException, *, notify: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        self.extensions.drained_all()
        self._serving.clear()
        if notify:
            self._out.append(error_frame(exc))
            self.messages_sent["error"] += 1
        self.blobs.stop()  # the replica counts it ended, once


class _PeerClosed(Exception):
    """The peer sent an error message (internal: becomes a ProtocolError)."""


def bind_nonces(mine: bytes, theirs: bytes, initiator: bool) -> bytes:
    """The channel binding of a session whose transport gives none: BLAKE2b-512 of the
    initiator's hello nonce, then the responder's."""
    first, second = (mine, theirs) if initiator else (theirs, mine)
    return crypto.blake2b(first + second, digest_size=BINDING_SIZE)


def _check_limit(name: str, value: object, high: int) -> None:
    if type(value) is not int or not 1 <= value <= high:
        raise InvalidArgument(f"{name} must be an integer in [1, {high}], got {value!r}")


def _nothing_wanted(feed_key: bytes) -> bool:
    return False


def replicate(
    a: Replica,
    b: Replica,
    *,
    upload: bool = True,
    download: bool = True,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> None:
    """Replicate two replicas in memory until each holds everything of the other it accepts.

    Runs a session between two :class:`Connection` objects (``a`` the initiator) by handing each
    one's output to the other. ``upload=False`` sends nothing of ``a`` to ``b``,
    ``download=False`` nothing of ``b`` to ``a``. Raises what either side raises, and
    :class:`ProtocolError` if the session stalls or has not settled after ``max_rounds``
    exchanges.
    """
    first = Connection(a, initiator=True, upload=upload, download=download)
    second = Connection(b, initiator=False, upload=download, download=upload)
    try:
        for _ in range(max_rounds):
            moved = False
            for sender, receiver in ((first, second), (second, first)):
                data = sender.data_to_send()
                if data:
                    moved = True
                    receiver.receive_data(data)
            if first.finished and second.finished:
                return
            if not moved:
                raise ProtocolError("replication stalled: neither side has anything to send")
        raise ProtocolError(f"replication did not settle after {max_rounds} rounds")
    finally:
        first.close()
        second.close()


__all__ = ["SUPPORTED_FEATURES", "Connection", "ProgressCallback", "bind_nonces", "replicate"]
