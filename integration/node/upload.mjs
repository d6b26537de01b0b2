#!/usr/bin/env node
// upload.mjs: upload one file with tus-js-client's Node API, as a researcher's script would.
//
//   node upload.mjs --endpoint URL --token T --file PATH [--name N] [--sha256 HEX] [--chunk-size BYTES]
//                   [--stall-timeout SECONDS] [--retry-delays MS,MS,...]
//
// On success it prints exactly one JSON line to stdout:
//   {"url": "...", "retries": N, "bytesSent": N, "size": N, "requests": N, "failures": [...]}
// where retries counts the times tus-js-client decided to retry after an error, bytesSent the
// request-body bytes handed to HTTP across all requests (re-sent bytes included), requests
// the HTTP requests made, and failures lists every failed request tus-js-client considered
// retrying, as {"method": "PATCH", "status": 500, "message": "...", "at": UNIX_MS, "retried": true}
// (status 0: no HTTP answer, e.g. a refused or dropped connection). Progress goes to stderr,
// sparsely; so does the upload URL once the server gave it, and again at every resume
// ("upload.mjs: upload URL U").
// Failure: the error on stderr, exit 1.
// --retry-delays sets tus-js-client's retryDelays: the waits in milliseconds before the 1st, 2nd,
// ... retry (default 0,250,500,1000,2000,3000); the count resets whenever the offset advances.
// A request whose connection moves no byte for --stall-timeout seconds (default 60) is aborted
// and counts as a failed request (tus-js-client itself would wait forever).
// TLS: trust a self-signed server through NODE_EXTRA_CA_CERTS.
import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { DefaultHttpStack, Upload } from 'tus-js-client'

function usage(msg) {
  process.stderr.write(
    `upload.mjs: ${msg}\nusage: node upload.mjs --endpoint URL --token T --file PATH [--name N] [--sha256 HEX] [--chunk-size BYTES] [--stall-timeout SECONDS] [--retry-delays MS,MS,...]\n`,
  )
  process.exit(2)
}

let args
try {
  args = parseArgs({
    options: {
      endpoint: { type: 'string' },
      token: { type: 'string' },
      file: { type: 'string' },
      name: { type: 'string' },
      sha256: { type: 'string' },
      'chunk-size': { type: 'string' },
      'stall-timeout': { type: 'string', default: '60' },
      'retry-delays': { type: 'string', default: '0,250,500,1000,2000,3000' },
    },
    strict: true,
  }).values
} catch (err) {
  usage(err.message)
}
for (const k of ['endpoint', 'token', 'file']) {
  if (!args[k]) usage(`--${k} is required`)
}
let chunkSize = Number.POSITIVE_INFINITY
if (args['chunk-size'] !== undefined) {
  chunkSize = Number(args['chunk-size'])
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) usage('--chunk-size must be a positive integer')
}
const stallMs = Number(args['stall-timeout']) * 1000
if (!Number.isFinite(stallMs) || stallMs <= 0) usage('--stall-timeout must be a positive number of seconds')
const retryDelays = args['retry-delays'].split(',').map(Number)
if (!retryDelays.every((d) => Number.isSafeInteger(d) && d >= 0)) usage('--retry-delays must be milliseconds, comma-separated')
if (args.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(args.sha256)) usage('--sha256 must be 64 hex digits')

let size
try {
  size = statSync(args.file).size
} catch (err) {
  usage(`cannot stat --file: ${err.message}`)
}

// CountingHttpStack wraps the Node HTTP stack to count request-body bytes and requests,
// whatever tus-js-client does between them (retries, offset look-ups), and to abort requests
// whose connection stalls.
const counters = { bytesSent: 0, requests: 0 }
class CountingHttpStack extends DefaultHttpStack {
  createRequest(method, url) {
    const req = super.createRequest(method, url)
    const send = req.send.bind(req)
    req.send = (body = null) => {
      counters.requests++
      if (body instanceof Readable) {
        body.on('data', (chunk) => {
          counters.bytesSent += chunk.length
        })
      } else if (body instanceof Uint8Array) {
        counters.bytesSent += body.length
      }
      const sent = send(body)
      const raw = req.getUnderlyingObject() // the http.ClientRequest, created synchronously by send
      raw?.setTimeout(stallMs, () => {
        raw.destroy(new Error(`no byte moved for ${stallMs / 1000}s (--stall-timeout)`))
      })
      return sent
    }
    return req
  }
}

const metadata = { filename: args.name ?? basename(args.file) }
if (args.sha256) metadata.sha256 = args.sha256.toLowerCase()

let retries = 0
const failures = []
let lastLogged = 0
const started = Date.now()
const logStep = Math.max(64 * 1024 * 1024, Math.floor(size / 8))

function statusOf(err) {
  return err?.originalResponse ? err.originalResponse.getStatus() : 0
}

function methodOf(err) {
  return err?.originalRequest ? err.originalRequest.getMethod() : ''
}

const upload = new Upload(createReadStream(args.file), {
  endpoint: args.endpoint,
  headers: { Authorization: `Bearer ${args.token}` },
  metadata,
  chunkSize,
  retryDelays,
  removeFingerprintOnSuccess: true,
  httpStack: new CountingHttpStack(),
  onShouldRetry(err, attempt) {
    const status = statusOf(err)
    // tus-js-client's default rule: retry network errors, 5xx, 409 and 423; not other 4xx.
    const retry = !(status >= 400 && status < 500) || status === 409 || status === 423
    const message = err.message.split('\n')[0]
    failures.push({ method: methodOf(err), status, message, at: Date.now(), retried: retry })
    if (retry) retries++
    process.stderr.write(
      `upload.mjs: request failed (${methodOf(err)} status ${status || 'none'}: ${message}); ` +
        `${retry ? `retry ${attempt + 1}` : 'not retrying'}\n`,
    )
    return retry
  },
  onProgress(bytesUploaded, bytesTotal) {
    if (bytesUploaded - lastLogged >= logStep || (bytesUploaded < lastLogged && bytesUploaded > 0)) {
      lastLogged = bytesUploaded
      const secs = (Date.now() - started) / 1000
      process.stderr.write(`upload.mjs: ${bytesUploaded}/${bytesTotal} bytes after ${secs.toFixed(1)}s\n`)
    }
  },
  onUploadUrlAvailable() {
    process.stderr.write(`upload.mjs: upload URL ${upload.url}\n`)
  },
  onError(err) {
    process.stderr.write(`upload.mjs: upload failed after ${retries} retries: ${err.stack || err}\n`)
    process.exit(1)
  },
  onSuccess() {
    const secs = (Date.now() - started) / 1000
    process.stderr.write(`upload.mjs: done, ${size} bytes in ${secs.toFixed(1)}s\n`)
    process.stdout.write(
      `${JSON.stringify({ url: upload.url, retries, bytesSent: counters.bytesSent, size, requests: counters.requests, failures })}\n`,
    )
  },
})

upload.start()
