// The harness's replication, many-writer and feed workloads on the reference, HyperDB 3.5.0 and
// its hypercore 6 (run from an install that provides hyperdb, hypercore and random-access-file,
// e.g. .cache/oracle with NODE_PATH pointing at its node_modules). Companion of workloads.js
// (the database workloads), same output format:
//
//   node replication.js '{"workloads": ["replicate", "writers", "feed-append", "feed-verify"],
//                         "entries": 10000, "writers": [5, 20], "blocks": 2000,
//                         "repeat": 3, "timeout": 120}'
//
// Prints one JSON line per result ({workload, size, unit, reps}; a workload that did not finish
// in `timeout` seconds gives {workload, size, unit, reps: [], timeout}, one that failed
// {workload, size, unit, reps: [], error}) and a last line
// {"sodium": "native"|"js", "node": version}.
//
// * replicate: a cold replica (on disk) of a single-writer database of `entries` entries
//   (keys dir{i%100}/sub{i%7}/k{i}, 64-byte values, as bench_net.build_single), over loopback
//   TCP from a server in its own process (db.replicate() piped through net sockets), in
//   entries/s, until the replica holds every block of the source feed. The reference indexes
//   nothing on receipt (it reads the trie lazily), ours verifies and indexes.
// * writers: N databases (on disk) each write 10 keys, the creator authorizes all (non-creators
//   use single puts: the reference's batch waits forever on an instance that has nothing from
//   the creator), then a full mesh of syncs (every pair once, creator's pairs first), in
//   seconds; each N runs in a child process killed after `timeout` seconds.
// * feed-append: hypercore on disk, one 64-byte block per append call, awaited one by one.
// * feed-verify: replicating that feed into a fresh in-memory hypercore (every block checked
//   against the Merkle tree and signature on receipt), blocks/s.
//
// The reference never fsyncs: compare with our non-durable numbers.
'use strict'

const path = require('path')
const os = require('os')
const fs = require('fs')
const net = require('net')
const { fork } = require('child_process')
const hyperdb = require('hyperdb')
const hypercore = require('hypercore')
const raf = require('random-access-file')
const ram = require('random-access-memory')

const p = (fn) => new Promise((resolve, reject) => fn((err, value) => err ? reject(err) : resolve(value)))
const now = () => Number(process.hrtime.bigint()) / 1e9
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const tempDir = (tag) => fs.mkdtempSync(path.join(os.tmpdir(), `hyperdb-ref-${tag}-`))
const onDisk = (dir) => (name) => raf(path.join(dir, name))
const emit = (line) => process.stdout.write(JSON.stringify(line) + '\n')

// --- child processes: the replication server and one many-writer run ---------------------------

async function serve (entries) {
  const dir = tempDir('source')
  const db = hyperdb(onDisk(dir), { valueEncoding: 'binary' })
  await p((cb) => db.ready(cb))
  const value = Buffer.alloc(64, 7)
  for (let first = 0; first < entries; first += 1000) {
    const ops = []
    for (let i = first; i < Math.min(first + 1000, entries); i++) {
      ops.push({ type: 'put', key: `dir${i % 100}/sub${i % 7}/k${i}`, value })
    }
    await p((cb) => db.batch(ops, cb))
  }
  const server = net.createServer((socket) => {
    const stream = db.replicate()
    socket.on('error', () => stream.destroy())
    stream.on('error', () => socket.destroy())
    socket.pipe(stream).pipe(socket)
  })
  server.listen(0, '127.0.0.1', () => {
    process.send({ port: server.address().port, key: db.key.toString('hex'), length: db.source.length })
  })
  process.on('disconnect', () => { fs.rmSync(dir, { recursive: true, force: true }); process.exit(0) })
}

function snapshot (db) {
  return JSON.stringify(db._writers.map((w) => [w._feed.key.toString('hex'), w._feed.length, w._authorized]).sort())
}

function authorizedLengths (db) {
  const lengths = []
  // the blocks held too: a feed's length can be known before its blocks arrive, and reading
  // the heads then waits for blocks that only a replication stream would bring
  for (const w of db._writers) {
    if (w._authorized) lengths.push([w._feed.key.toString('hex'), w._feed.length, w._feed.downloaded(0, w._feed.length)])
  }
  return JSON.stringify(lengths.sort())
}

// Let pending head decoding and writer discovery finish; gives up after 1 s (reading a head
// whose block has not arrived waits for a replication stream: the next round brings it).
async function settle (db) {
  let timer = null
  const late = new Promise((resolve) => { timer = setTimeout(resolve, 1000) })
  const work = (async () => {
    for (let i = 0; i < 3; i++) {
      await p((cb) => db._getHeads(false, cb))
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  await Promise.race([work, late])
  clearTimeout(timer)
}

// One round of a.replicate() piped into b.replicate() (non-live), as hyperdb's own tests do.
// hypercore 6 does not always end a multi-feed non-live replication, so a round also ends once
// both sides hold the same authorized feeds at the same lengths, or after 300 ms without change.
function round (a, b) {
  return new Promise((resolve) => {
    const s1 = a.replicate()
    const s2 = b.replicate()
    let ended = 0
    let last = snapshot(a) + snapshot(b)
    let quietSince = Date.now()
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearInterval(timer)
      s1.destroy()
      s2.destroy()
      resolve()
    }
    const timer = setInterval(() => {
      const state = snapshot(a) + snapshot(b)
      if (state !== last) { last = state; quietSince = Date.now() }
      if (authorizedLengths(a) === authorizedLengths(b)) finish()
      else if (Date.now() - quietSince >= 300) { quietRounds++; finish() }
    }, 2)
    for (const s of [s1, s2]) {
      const end = () => { if (++ended === 2) finish() }
      s.once('end', end)
      s.once('close', end)
      s.on('error', () => {})
    }
    s1.pipe(s2).pipe(s1)
  })
}

let quietRounds = 0 // rounds ended by the 300 ms rule (reported by the writers workload)

// Rounds until both sides hold the same authorized feeds at the same lengths (at least one
// round, as our full mesh opens a session for every pair).
async function sync (a, b) {
  for (let i = 0; i < 50; i++) {
    await round(a, b)
    await settle(a)
    await settle(b)
    if (authorizedLengths(a) === authorizedLengths(b)) return i + 1
  }
  throw new Error('sync did not converge')
}

async function writersRun (dir, count, keys) {
  {
    const value = Buffer.alloc(32, 7)
    const dbs = [hyperdb(onDisk(path.join(dir, 'w0')), { valueEncoding: 'binary' })]
    await p((cb) => dbs[0].ready(cb))
    for (let i = 1; i < count; i++) {
      const db = hyperdb(onDisk(path.join(dir, `w${i}`)), dbs[0].key, { valueEncoding: 'binary' })
      await p((cb) => db.ready(cb))
      dbs.push(db)
    }
    const ops = []
    for (let j = 0; j < keys; j++) ops.push({ type: 'put', key: `w0/k${j}`, value })
    await p((cb) => dbs[0].batch(ops, cb))
    for (let i = 1; i < count; i++) {
      for (let j = 0; j < keys; j++) await p((cb) => dbs[i].put(`w${i}/k${j}`, value, cb))
    }
    for (let i = 1; i < count; i++) await p((cb) => dbs[0].authorize(dbs[i].local.key, cb))
    let rounds = 0
    const started = now()
    for (let i = 0; i < count; i++) {
      for (let j = i + 1; j < count; j++) rounds += await sync(dbs[i], dbs[j])
    }
    const elapsed = now() - started
    const lengths = new Set(dbs.map(authorizedLengths))
    if (lengths.size !== 1) throw new Error('the replicas did not converge')
    const last = dbs[count - 1]
    for (let i = 0; i < count; i++) {
      if (!(await p((cb) => last.get(`w${i}/k0`, cb))).length) throw new Error(`w${i}/k0 is missing`)
    }
    // exit at once: open feeds and sockets would keep the process alive
    process.send({ seconds: elapsed, rounds, quietRounds }, () => process.exit(0))
  }
}

// Run this script in a child process in `mode`; `onMessage` sees its messages. Resolves with
// the child's last message, or null when `timeout` seconds pass first (the child is killed).
function child (mode, args, timeout, onMessage) {
  return new Promise((resolve, reject) => {
    const proc = fork(__filename, [JSON.stringify({ mode, ...args })], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    let last = null
    const timer = timeout ? setTimeout(() => { proc.kill('SIGKILL'); resolve(null) }, timeout * 1000) : null
    proc.on('message', (msg) => { last = msg; if (onMessage) onMessage(msg, proc) })
    proc.on('exit', (code) => {
      if (timer) clearTimeout(timer)
      if (last !== null) resolve(last)
      else reject(new Error(`the ${mode} child exited (${code}) without a result`))
    })
  })
}

// --- the workloads ---------------------------------------------------------------------------

async function coldReplica (port, key, length) {
  const dir = tempDir('replica')
  const db = hyperdb(onDisk(dir), Buffer.from(key, 'hex'), { valueEncoding: 'binary' })
  await p((cb) => db.ready(cb))
  const started = now()
  await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const stream = db.replicate()
    const timer = setInterval(() => {
      if (db.source.length === length && db.source.downloaded(0, length) === length) finish()
    }, 2)
    function finish () { clearInterval(timer); socket.destroy(); resolve() }
    socket.on('error', (err) => { clearInterval(timer); reject(err) })
    socket.pipe(stream).pipe(socket)
  })
  const elapsed = now() - started
  await p((cb) => db.source.close(cb)).catch(() => {})
  fs.rmSync(dir, { recursive: true, force: true })
  return elapsed
}

async function replicate (entries, repeat, timeout) {
  let server = null
  const info = await new Promise((resolve, reject) => {
    child('serve', { entries }, 0, (msg, proc) => { server = proc; resolve(msg) }).catch(reject)
  })
  const deadline = now() + timeout
  try {
    const reps = []
    await coldReplica(info.port, info.key, info.length) // warm-up
    for (let r = 0; r < repeat && now() < deadline; r++) {
      reps.push(entries / await coldReplica(info.port, info.key, info.length))
    }
    emit({ workload: 'replicate', size: entries, unit: 'entries/s', reps })
  } finally {
    server.disconnect()
  }
}

async function writers (counts, keys, timeout) {
  for (const count of counts) {
    const dir = tempDir(`writers${count}`) // here: a child killed on timeout cannot clean up
    try {
      let result
      try {
        result = await child('writers', { dir, count, keys }, timeout)
      } catch (err) { // the run failed (hypercore 6 sometimes never converges): say so, go on
        emit({ workload: 'writers', size: count, unit: 's', reps: [], error: String(err.message || err) })
        continue
      }
      if (result === null) emit({ workload: 'writers', size: count, unit: 's', reps: [], timeout })
      else emit({ workload: 'writers', size: count, unit: 's', reps: [result.seconds], rounds: result.rounds })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

async function feeds (wanted, blocks, repeat) {
  const block = Buffer.alloc(64, 7)
  const dir = tempDir('feed')
  try {
    const appends = []
    let source = null
    for (let r = 0; r < (wanted.has('feed-append') ? repeat : 1); r++) {
      if (source) await p((cb) => source.close(cb))
      source = hypercore(onDisk(path.join(dir, `f${r}`)))
      await p((cb) => source.ready(cb))
      const started = now()
      for (let i = 0; i < blocks; i++) await p((cb) => source.append(block, cb))
      appends.push(blocks / (now() - started))
    }
    if (wanted.has('feed-append')) emit({ workload: 'feed-append', size: blocks, unit: 'blocks/s', reps: appends })
    if (wanted.has('feed-verify')) {
      const verify = async () => {
        const copy = hypercore(() => new ram(), source.key) // eslint-disable-line new-cap
        await p((cb) => copy.ready(cb))
        const started = now()
        await new Promise((resolve) => {
          const a = source.replicate()
          const b = copy.replicate()
          const timer = setInterval(() => {
            if (copy.length === blocks && copy.downloaded(0, blocks) === blocks) { clearInterval(timer); resolve() }
          }, 2)
          a.pipe(b).pipe(a)
        })
        return blocks / (now() - started)
      }
      await verify() // warm-up
      const reps = []
      for (let r = 0; r < repeat; r++) reps.push(await verify())
      emit({ workload: 'feed-verify', size: blocks, unit: 'blocks/s', reps })
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main () {
  const config = JSON.parse(process.argv[2] || '{}')
  if (config.mode === 'serve') return serve(config.entries)
  if (config.mode === 'writers') return writersRun(config.dir, config.count, config.keys)
  const wanted = new Set(config.workloads || ['replicate', 'writers', 'feed-append', 'feed-verify'])
  const repeat = config.repeat || 3
  const timeout = config.timeout || 120
  if (wanted.has('replicate')) await replicate(config.entries || 10000, repeat, timeout)
  if (wanted.has('writers')) await writers(config.writers || [5, 20], config.keys || 10, timeout)
  if (wanted.has('feed-append') || wanted.has('feed-verify')) await feeds(wanted, config.blocks || 2000, repeat)
  let sodium = 'js'
  try { require('sodium-native'); sodium = 'native' } catch (_) {}
  emit({ sodium, node: process.version })
  process.exit(0)
}

main().catch((err) => { process.stderr.write(String((err && err.stack) || err) + '\n'); process.exit(2) })
