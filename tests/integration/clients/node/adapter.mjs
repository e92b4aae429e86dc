// Node side of the client checks: drives kafkajs 2.2.4 or @platformatic/kafka 1.35.0 for
// adapters.py (NodeAdapter). Reads one JSON request per line on stdin and answers one JSON line
// on stdout: {"result": ...} or {"fail": "message"}. Bytes travel as base64, null stays null.
// Operations mirror the adapter interface in checks.py.
//   node adapter.mjs kafkajs|platformatic HOST:PORT     (run from tests/node)
// kafkajs has no consumer without a consumer group, so `consume` uses kafkajs's own cluster and
// broker classes (metadata, leader lookup, Fetch request and record-batch decoding) directly;
// @platformatic/kafka has a public group-less Consumer.fetch().
import { createRequire } from 'node:module'
import path from 'node:path'
import readline from 'node:readline'

const require = createRequire(path.join(process.cwd(), 'package.json'))
const [client, bootstrap] = process.argv.slice(2)
const BIG = 8 * 1024 * 1024

const b64 = (buf) => (buf === null || buf === undefined ? null : Buffer.from(buf).toString('base64'))
const unb64 = (s) => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))
const errName = (e) => e.type || e.apiId || (e.cause && errName(e.cause)) ||
  (e.originalError && errName(e.originalError)) || (e.errors && e.errors[0] && errName(e.errors[0])) ||
  e.message

// Per-record acknowledgements from per-partition base offsets: records of one partition are
// appended in send order.
function acksFromBases (records, baseOf) {
  const seen = {}
  return records.map((r) => {
    const base = baseOf(r.p)
    if (base === undefined || base === null || base < 0) return null
    seen[r.p] = (seen[r.p] ?? -1) + 1
    return [r.p, base + seen[r.p]]
  })
}

function makeKafkajs () {
  const { Kafka, CompressionTypes, logLevel } = require('kafkajs')
  const kafka = new Kafka({ clientId: process.env.RUNNEL_CLIENT_ID || 'runnel-clients', brokers: [bootstrap], logLevel: logLevel.NOTHING, retry: { retries: 3 } })
  const createCluster = kafka[Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster')]
  let admin = null
  const getAdmin = async () => {
    if (!admin) {
      admin = kafka.admin()
      await admin.connect()
    }
    return admin
  }
  const adminCall = async (fn) => {
    try {
      await fn(await getAdmin())
      return null
    } catch (e) {
      return errName(e)
    }
  }
  const codecs = { gzip: CompressionTypes.GZIP }
  return {
    info: { name: 'kafkajs', codecs: ['gzip'], has_admin: true, has_idempotence: true, dup_headers: true, probe_no_create: true },
    async probe_no_create ({ name }) {
      const c = createCluster({ allowAutoTopicCreation: false })
      await c.connect()
      try {
        await c.addTargetTopic(name) // Metadata with allow_auto_topic_creation=false
      } catch (e) {
        // UNKNOWN_TOPIC_OR_PARTITION is the expected answer
      } finally {
        await c.disconnect()
      }
      return null
    },
    async create_topic ({ name, partitions, configs }) {
      let created = true
      const err = await adminCall(async (a) => {
        created = await a.createTopics({
          waitForLeaders: true,
          timeout: 20000,
          topics: [{ topic: name, numPartitions: partitions, replicationFactor: 1, configEntries: Object.entries(configs).map(([k, v]) => ({ name: k, value: v })) }]
        })
      })
      return err ?? (created ? null : 'TOPIC_ALREADY_EXISTS')
    },
    delete_topic: ({ name }) => adminCall((a) => a.deleteTopics({ topics: [name], timeout: 20000 })),
    create_partitions: ({ name, total }) => adminCall((a) => a.createPartitions({ topicPartitions: [{ topic: name, count: total }] })),
    async describe_configs ({ name }) {
      const r = await (await getAdmin()).describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name }] })
      const out = {}
      for (const e of r.resources[0].configEntries) out[e.configName] = e.configValue
      return out
    },
    alter_configs: ({ name, configs }) => adminCall((a) => a.alterConfigs({
      validateOnly: false,
      resources: [{ type: 2, name, configEntries: Object.entries(configs).map(([k, v]) => ({ name: k, value: v })) }]
    })),
    async brokers () {
      const d = await (await getAdmin()).describeCluster()
      return d.brokers.map((b) => [b.nodeId, b.host, b.port])
    },
    async partitions ({ name }) {
      const md = await (await getAdmin()).fetchTopicMetadata()
      const t = md.topics.find((x) => x.name === name)
      return t ? t.partitions.length : null
    },
    async produce ({ topic, records, codec, idempotent }) {
      const p = kafka.producer(idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {})
      await p.connect()
      try {
        const messages = records.map((r) => {
          const headers = {}
          for (const [k, v] of r.headers) {
            if (k in headers) headers[k] = [].concat(headers[k], unb64(v))
            else headers[k] = unb64(v)
          }
          const m = { partition: r.p, key: unb64(r.key), value: unb64(r.value), headers }
          if (r.ts !== null) m.timestamp = String(r.ts)
          return m
        })
        const res = await p.send({ topic, acks: -1, timeout: 60000, compression: codec ? codecs[codec] : undefined, messages })
        for (const x of res) {
          if (x.errorCode) throw new Error(`partition ${x.partition}: error ${x.errorCode}`)
        }
        return acksFromBases(records, (part) => {
          const x = res.find((y) => y.partition === part)
          return x ? Number(x.baseOffset) : undefined
        })
      } finally {
        await p.disconnect()
      }
    },
    async end_offset ({ topic, partition }) {
      const r = await (await getAdmin()).fetchTopicOffsets(topic)
      return Number(r.find((x) => x.partition === partition).high)
    },
    async offset_for_time ({ topic, partition, ts }) {
      const r = await (await getAdmin()).fetchTopicOffsetsByTimestamp(topic, ts)
      return Number(r.find((x) => x.partition === partition).offset)
    },
    async consume ({ topic, partition, start, count, timeout }) {
      const cluster = createCluster({ allowAutoTopicCreation: false, isolationLevel: 1 })
      await cluster.connect()
      try {
        await cluster.addTargetTopic(topic)
        let offset
        if (start === 'beginning') {
          const [t] = await cluster.fetchTopicsOffset([{ topic, fromBeginning: true, partitions: [{ partition }] }])
          offset = Number(t.partitions[0].offset)
        } else {
          offset = start
        }
        const out = []
        const deadline = Date.now() + timeout * 1000
        while (out.length < count && Date.now() < deadline) {
          const leader = Object.keys(cluster.findLeaderForPartitions(topic, [partition]))[0]
          const broker = await cluster.findBroker({ nodeId: leader })
          const res = await broker.fetch({
            replicaId: -1,
            isolationLevel: 1,
            maxWaitTime: 500,
            minBytes: 1,
            maxBytes: BIG,
            topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: BIG }] }]
          })
          const pd = res.responses[0].partitions[0]
          if (pd.errorCode) throw new Error(`fetch error ${pd.errorCode}`)
          for (const m of pd.messages) {
            const off = Number(m.offset)
            if (off < offset || m.isControlRecord) continue
            const headers = []
            for (const [k, v] of Object.entries(m.headers || {})) {
              for (const one of [].concat(v)) headers.push([k, b64(one)])
            }
            out.push({ p: partition, offset: off, key: b64(m.key), value: b64(m.value), headers, ts: Number(m.timestamp) })
            offset = off + 1
            if (out.length >= count) break
          }
        }
        return out
      } finally {
        await cluster.disconnect()
      }
    },
    async close () {
      if (admin) await admin.disconnect()
    }
  }
}

function makePlatformatic () {
  const { Producer, Consumer, Admin } = require('@platformatic/kafka')
  const base = { clientId: process.env.RUNNEL_CLIENT_ID || 'runnel-clients', bootstrapBrokers: [bootstrap], retries: 3 }
  const admin = new Admin(base)
  const consumer = new Consumer({ ...base, groupId: `runnel-clients-${process.pid}`, maxBytes: BIG })
  const adminCall = async (fn) => {
    try {
      await fn()
      return null
    } catch (e) {
      return errName(e)
    }
  }
  const offsetsAt = async (topic, partition, ts) => {
    const r = await consumer.listOffsets({ topics: [topic], partitions: { [topic]: [partition] }, timestamp: BigInt(ts) })
    return Number(r.get(topic)[partition])
  }
  return {
    info: { name: '@platformatic/kafka', codecs: ['gzip', 'snappy', 'lz4'], has_admin: true, has_idempotence: true, dup_headers: false, probe_no_create: true },
    async probe_no_create ({ name }) {
      try {
        await admin.metadata({ topics: [name], autocreateTopics: false, forceUpdate: true })
      } catch (e) {
        // UNKNOWN_TOPIC_OR_PARTITION is the expected answer
      }
      return null
    },
    create_topic: ({ name, partitions, configs }) => adminCall(() => admin.createTopics({
      topics: [name], partitions, replicas: 1, configs: Object.entries(configs).map(([k, v]) => ({ name: k, value: v }))
    })),
    delete_topic: ({ name }) => adminCall(() => admin.deleteTopics({ topics: [name] })),
    // No assignments: sent as null; an empty list is refused, as Kafka refuses it.
    create_partitions: ({ name, total }) => adminCall(() => admin.createPartitions({ topics: [{ name, count: total }] })),
    async describe_configs ({ name }) {
      const r = await admin.describeConfigs({ resources: [{ resourceType: 2, resourceName: name }] })
      const out = {}
      for (const c of r[0].configs) out[c.name] = c.value
      return out
    },
    alter_configs: ({ name, configs }) => adminCall(() => admin.alterConfigs({
      resources: [{ resourceType: 2, resourceName: name, configs: Object.entries(configs).map(([k, v]) => ({ name: k, value: v })) }]
    })),
    async partitions ({ name }) {
      const names = await admin.listTopics()
      if (!names.includes(name)) return null
      consumer.clearMetadata?.()
      const md = await consumer.metadata({ topics: [name], forceUpdate: true })
      return md.topics.get(name).partitionsCount
    },
    async produce ({ topic, records, codec, idempotent }) {
      const p = new Producer({ ...base, compression: codec ?? 'none', idempotent: !!idempotent, acks: -1, autocreateTopics: true })
      try {
        const messages = records.map((r) => {
          const m = { topic, partition: r.p, key: unb64(r.key), value: unb64(r.value), headers: new Map(r.headers.map(([k, v]) => [Buffer.from(k), unb64(v)])) }
          if (r.ts !== null) m.timestamp = BigInt(r.ts)
          return m
        })
        const res = await p.send({ messages, acks: -1 })
        return acksFromBases(records, (part) => {
          const x = (res.offsets || []).find((y) => y.topic === topic && y.partition === part)
          return x ? Number(x.offset) : undefined
        })
      } finally {
        await p.close()
      }
    },
    end_offset: ({ topic, partition }) => offsetsAt(topic, partition, -1),
    offset_for_time: ({ topic, partition, ts }) => offsetsAt(topic, partition, ts),
    async consume ({ topic, partition, start, count, timeout }) {
      let offset = start === 'beginning' ? await offsetsAt(topic, partition, -2) : start
      const md = await consumer.metadata({ topics: [topic] })
      const t = md.topics.get(topic)
      const node = t.partitions[partition].leader
      const out = []
      const deadline = Date.now() + timeout * 1000
      while (out.length < count && Date.now() < deadline) {
        const res = await consumer.fetch({
          node,
          maxWaitTime: 500,
          topics: [{ topicId: t.id, partitions: [{ partition, currentLeaderEpoch: -1, fetchOffset: BigInt(offset), lastFetchedEpoch: -1, partitionMaxBytes: BIG }] }]
        })
        const pd = res.responses[0].partitions[0]
        if (pd.errorCode) throw new Error(`fetch error ${pd.errorCode}`)
        for (const batch of pd.records || []) {
          if (batch.attributes & 0x20) continue // control batch
          for (const r of batch.records) {
            const off = Number(batch.firstOffset) + r.offsetDelta
            if (off < offset) continue
            out.push({
              p: partition,
              offset: off,
              key: b64(r.key),
              value: b64(r.value),
              headers: r.headers.map(([k, v]) => [k.toString(), b64(v)]),
              ts: Number(batch.firstTimestamp + r.timestampDelta)
            })
            offset = off + 1
            if (out.length >= count) break
          }
          if (out.length >= count) break
        }
      }
      return out
    },
    async close () {
      await admin.close()
      await consumer.close(true)
    }
  }
}

const impl = client === 'kafkajs' ? makeKafkajs() : client === 'platformatic' ? makePlatformatic() : null
if (!impl) {
  console.error('usage: node adapter.mjs kafkajs|platformatic HOST:PORT')
  process.exit(2)
}

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  if (!line.trim()) continue
  const req = JSON.parse(line)
  let resp
  try {
    const fn = req.op === 'info' ? async () => impl.info : impl[req.op]
    if (!fn) throw new Error(`unknown op ${req.op}`)
    const timeoutMs = (req.timeout ?? 60) * 1000
    const result = await Promise.race([
      fn(req),
      new Promise((resolve, reject) => setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs).unref())
    ])
    resp = { result: result === undefined ? null : result }
  } catch (e) {
    resp = { fail: `${e.name || 'Error'}: ${e.message}${e.errors ? ' ' + e.errors.map((x) => x.message).join('; ') : ''}` }
  }
  process.stdout.write(JSON.stringify(resp) + '\n')
}
await impl.close().catch(() => {})
process.exit(0)
