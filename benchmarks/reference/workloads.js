// The harness's workloads on the reference, HyperDB 3.5.0 (run from the oracle's install in
// .cache/oracle, which provides hyperdb and random-access-file): the same operations, key shapes
// and sizes as benchmarks/workloads.py, so that benchmarks/reference.py can pair the results.
//
//   node workloads.js '{"workloads": ["put", ...], "sizes": [10000], "repeat": 3, "quick": false}'
//
// Prints one JSON line per result ({workload, size, unit, reps}) and a last line
// {"sodium": "native"|"js", "node": version}. Databases live on disk (random-access-file) in a
// temporary directory; the reference never fsyncs, so its puts are compared with our non-durable
// ones.
'use strict'

const path = require('path')
const os = require('os')
const fs = require('fs')
const hyperdb = require('hyperdb')
const raf = require('random-access-file')

const config = JSON.parse(process.argv[2] || '{}')
const wanted = new Set(config.workloads || [])
const repeat = config.repeat || 3
const quick = !!config.quick

const keyOf = (i) => `d${i % 97}/s${i % 1009}/k${i}`
const p = (fn) => new Promise((resolve, reject) => fn((err, value) => err ? reject(err) : resolve(value)))
const now = () => Number(process.hrtime.bigint()) / 1e9

// a fixed pseudo-random sequence (the harness's seeds are its own; only the shape must match)
let state = 20261122
const random = () => { state = (state * 1103515245 + 12345) & 0x7fffffff; return state / 0x80000000 }
const value = Buffer.alloc(32, 7)

function emit (workload, size, unit, reps) {
  process.stdout.write(JSON.stringify({ workload, size, unit, reps }) + '\n')
}

async function rate (workload, size, unit, run) {
  await run() // warm-up
  const reps = []
  for (let r = 0; r < repeat; r++) {
    const started = now()
    const count = await run()
    reps.push(count / (now() - started))
  }
  emit(workload, size, unit, reps)
}

async function count (stream) {
  return new Promise((resolve, reject) => {
    let n = 0
    stream.on('data', () => { n++ })
    stream.on('end', () => resolve(n))
    stream.on('error', reject)
  })
}

async function database (size) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hyperdb-ref-'))
  const db = hyperdb((name) => raf(path.join(dir, name)), { valueEncoding: 'binary' })
  await p((cb) => db.ready(cb))
  const tail = Math.min(1000, Math.max(Math.floor(size / 10), 1))
  let started = now()
  for (let first = 0; first < size - tail; first += 1000) {
    const ops = []
    for (let i = first; i < Math.min(first + 1000, size - tail); i++) ops.push({ type: 'put', key: keyOf(i), value })
    await p((cb) => db.batch(ops, cb))
  }
  const older = await p((cb) => db.version(cb))
  for (let first = size - tail; first < size; first += 1000) {
    const ops = []
    for (let i = first; i < Math.min(first + 1000, size); i++) ops.push({ type: 'put', key: keyOf(i), value })
    await p((cb) => db.batch(ops, cb))
  }
  if (wanted.has('load')) emit('load', size, 'keys/s', [size / (now() - started)])
  let extra = size
  if (wanted.has('put')) {
    const n = quick ? 100 : 500
    await rate('put', size, 'puts/s', async () => {
      for (let i = 0; i < n; i++) await p((cb) => db.put(keyOf(extra++), value, cb))
      return n
    })
  }
  if (wanted.has('batch')) {
    await rate('batch', size, 'keys/s', async () => {
      for (let b = 0; b < 2; b++) {
        const ops = []
        for (let i = 0; i < 1000; i++) ops.push({ type: 'put', key: keyOf(extra++), value })
        await p((cb) => db.batch(ops, cb))
      }
      return 2000
    })
  }
  const sample = []
  for (let i = 0; i < (quick ? 500 : 4000); i++) sample.push(keyOf(Math.floor(random() * size)))
  if (wanted.has('get')) {
    await rate('get', size, 'gets/s', async () => {
      let found = 0
      for (const key of sample) if ((await p((cb) => db.get(key, cb))).length) found++
      return found
    })
  }
  if (wanted.has('list') && size <= 100000) {
    await rate('list', size, 'entries/s', async () => (await p((cb) => db.list('', cb))).length)
  }
  if (wanted.has('history')) {
    await rate('history', size, 'writes/s', async () => count(db.createHistoryStream()))
  }
  if (wanted.has('diff')) {
    const then = db.checkout(older)
    const fixed = db.checkout(await p((cb) => db.version(cb)))
    await rate('diff', size, 'changes/s', async () => count(fixed.createDiffStream(then, '')))
  }
  if (wanted.has('checkout-get')) {
    const early = sample.filter((key) => Number(key.split('k').pop()) < size - tail)
    await rate('checkout-get', size, 'gets/s', async () => {
      const then = db.checkout(older) // a new checkout each pass, as ours
      let found = 0
      for (const key of early) if ((await p((cb) => then.get(key, cb))).length) found++
      return found
    })
  }
  fs.rmSync(dir, { recursive: true, force: true })
}

async function main () {
  for (const size of config.sizes || []) await database(size)
  let sodium = 'js'
  try { require('sodium-native'); sodium = 'native' } catch (_) {}
  process.stdout.write(JSON.stringify({ sodium, node: process.version }) + '\n')
}

main().catch((err) => { process.stderr.write(String(err && err.stack || err) + '\n'); process.exit(2) })
