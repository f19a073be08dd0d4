// Segment's published TikTok Audiences destination (npm @segment/action-destinations) over
// the benchmark's NDJSON events file, in this one process, for the side-by-side in
// benchmarks/segment.py. Nothing here reimplements Segment: events are matched with
// Segment's FQL (@segment/destination-subscriptions), routed to the destination's own
// addToAudience / removeFromAudience actions and sent in batches through the framework's
// batch entry point (Destination.executeBatch: map, drop empty values, validate,
// performBatch). Only the fetch under Segment's request client is replaced:
//
//   --mode http     every request goes over HTTP to --base-url (a loopback server the
//                   Python side runs); a URL outside TikTok's API is refused, so nothing
//                   can reach the network;
//   --mode dry-run  every request is built (JSON body and all) and answered in this
//                   process with TikTok's success envelope; its users are counted.
//
// The last stdout line is a JSON summary; stderr carries errors only.

import { createReadStream, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

const startupSeconds = process.uptime() // node's own start, before any module of ours

const TIKTOK_API = 'https://business-api.tiktok.com'
const SUCCESS = JSON.stringify({ code: 0, message: 'OK', data: {} })

const { values: options } = parseArgs({
  options: {
    events: { type: 'string' },
    mapping: { type: 'string' },
    mode: { type: 'string', default: 'http' },
    'base-url': { type: 'string' },
    'batch-size': { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '4' },
    token: { type: 'string', default: 'demo-access-token' }
  }
})
if (!options.events || !options.mapping) throw new Error('--events and --mapping are required')
if (!['http', 'dry-run'].includes(options.mode)) throw new Error(`unknown --mode ${options.mode}`)
if (options.mode === 'http' && !/^http:\/\/127\.0\.0\.1:\d+$/.test(options['base-url'] ?? '')) {
  throw new Error('--mode http needs --base-url http://127.0.0.1:PORT')
}
const batchSize = Number(options['batch-size'])
const concurrency = Number(options.concurrency)

// Segment's modules, resolved the way the destination package itself resolves them, so
// the framework, the FQL and the fetch are the very copies its code uses.
const require = createRequire(import.meta.url)
const requireFromSegment = createRequire(require.resolve('@segment/action-destinations/package.json'))
const coreEntry = requireFromSegment.resolve('@segment/actions-core')
const requireFromCore = createRequire(coreEntry)
const { Destination, defaultValues } = requireFromCore(coreEntry)
const { parseFql, validate } = requireFromCore('@segment/destination-subscriptions')
// The request client calls `fetch.default` of this module at each request; swapping it
// is the one point where HTTP leaves Segment's code.
const fetchModule = requireFromCore(path.join(path.dirname(coreEntry), 'fetch.js'))
const definition = requireFromSegment('@segment/action-destinations/dist/destinations/tiktok-audiences').default
const { version } = requireFromSegment('@segment/action-destinations/package.json')
const destination = new Destination(definition)
const loadedSeconds = process.uptime()

let requests = 0
let stubUsers = 0
let stubSeconds = 0
const realFetch = fetchModule.default

function sendToLoopback(request) {
  if (!request.url.startsWith(`${TIKTOK_API}/`)) {
    return Promise.reject(new Error(`refused: not TikTok's API: ${request.url}`))
  }
  requests += 1
  const url = options['base-url'] + request.url.slice(TIKTOK_API.length)
  return realFetch(new fetchModule.Request(url, request))
}

async function answerInProcess(request) {
  requests += 1
  const body = await request.text()
  const started = performance.now()
  stubUsers += JSON.parse(body).batch_data.length // only to check the counts
  stubSeconds += (performance.now() - started) / 1000
  return new fetchModule.Response(SUCCESS, { status: 200, headers: { 'content-type': 'application/json' } })
}

fetchModule.default = options.mode === 'http' ? sendToLoopback : answerInProcess

// Our mapping file's subscriptions, each with the Segment action's default mapping
// overlaid by our mapping's values for the fields the action has (ours names a few more,
// device_type, audience_key, advertiser_id, that Segment's action does not know).
const mappingFile = JSON.parse(readFileSync(options.mapping, 'utf8'))
const subscriptions = mappingFile.subscriptions
  .filter((subscription) => subscription.enabled !== false)
  .map((subscription) => {
    const action = definition.actions[subscription.action]
    if (!action) throw new Error(`Segment's destination has no action ${subscription.action}`)
    const fql = parseFql(subscription.subscribe)
    if (fql.error) throw new Error(`${subscription.name}: ${fql.error.message}`)
    const mapping = defaultValues(action.fields)
    for (const key of Object.keys(action.fields)) {
      if (key in (subscription.mapping ?? {})) mapping[key] = subscription.mapping[key]
    }
    return { action: subscription.action, fql, mapping, pending: [], routed: 0 }
  })

const counts = { lines: 0, unmatched: 0, malformed: 0, batches: 0, ok: 0, failed: 0 }
const failures = new Map() // message -> count
const inFlight = new Set()

function fail(message, count) {
  counts.failed += count
  failures.set(message, (failures.get(message) ?? 0) + count)
}

async function executeBatch(subscription, events) {
  counts.batches += 1
  try {
    const results = await destination.executeBatch(subscription.action, {
      events,
      mapping: subscription.mapping,
      settings: {},
      auth: { accessToken: options.token }
    })
    // The Destination object keeps every response it sees (request, body and all) for
    // Segment's tests; one object serving a whole file would grow by ~1.5 KB per event.
    destination.responses.length = 0
    for (let i = 0; i < events.length; i++) {
      const result = results[i]
      if (result && result.status >= 200 && result.status < 300) counts.ok += 1
      else fail(result ? `${result.status} ${result.errormessage ?? ''}`.trim() : 'no result', 1)
    }
  } catch (error) {
    fail(`batch threw: ${error?.message ?? error}`, events.length)
  }
}

async function flush(subscription) {
  const events = subscription.pending
  subscription.pending = []
  const batch = executeBatch(subscription, events).finally(() => inFlight.delete(batch))
  inFlight.add(batch)
  while (inFlight.size >= concurrency) await Promise.race(inFlight)
}

const started = performance.now()
const lines = createInterface({ input: createReadStream(options.events), crlfDelay: Infinity })
for await (const line of lines) {
  if (line.length === 0) continue
  counts.lines += 1
  let event
  try {
    event = JSON.parse(line)
  } catch {
    counts.malformed += 1
    continue
  }
  let matched = false
  for (const subscription of subscriptions) {
    if (!validate(subscription.fql, event)) continue
    matched = true
    subscription.routed += 1
    subscription.pending.push(event)
    if (subscription.pending.length >= batchSize) await flush(subscription)
  }
  if (!matched) counts.unmatched += 1
}
for (const subscription of subscriptions) {
  if (subscription.pending.length > 0) await flush(subscription)
}
await Promise.all(inFlight)
const runSeconds = (performance.now() - started) / 1000

console.log(
  JSON.stringify({
    version,
    node: process.version,
    mode: options.mode,
    ...counts,
    routed: subscriptions.reduce((sum, s) => ({ ...sum, [s.action]: (sum[s.action] ?? 0) + s.routed }), {}),
    failures: Object.fromEntries(failures),
    requests,
    stub_users: options.mode === 'dry-run' ? stubUsers : null,
    stub_s: stubSeconds,
    startup_s: startupSeconds,
    loaded_s: loadedSeconds,
    run_s: runSeconds
  })
)
