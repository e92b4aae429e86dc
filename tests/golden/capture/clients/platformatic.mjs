// Golden capture driver for @platformatic/kafka 1.35.0 (Node 20): produces 5 records
// (key k<i>, value v<i>-<codec>:PAD) with every codec Node 20 allows (none, gzip, snappy, lz4; zstd
// needs Node 22), an idempotent producer, a transaction, a group consumer, SASL/PLAIN and the
// admin calls.
// Usage: node platformatic.mjs HOST:PORT   (run from tests/node so node_modules resolves)
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.cwd(), 'package.json'))
const { Producer, Consumer, Admin, stringSerializers, stringDeserializers } =
  require('@platformatic/kafka')

const bootstrap = process.argv[2]
const N = 5
const PAD = '0123456789abcdef'.repeat(8) // compressible, so every codec really compresses
setTimeout(() => { console.error('platformatic: overall timeout'); process.exit(0) }, 60000).unref()

async function step (name, fn) {
  try {
    await Promise.race([fn(), new Promise((resolve, reject) =>
      setTimeout(() => reject(new Error('step timeout')), 15000).unref())])
  } catch (e) {
    console.error(`platformatic ${name}: ${e.message}`)
  }
}

function records (topic, codec) {
  const out = []
  for (let i = 0; i < N; i++) out.push({ topic, key: `k${i}`, value: `v${i}-${codec}:${PAD}` })
  return out
}

const base = { clientId: 'golden-platformatic', bootstrapBrokers: [bootstrap] }

for (const codec of ['none', 'gzip', 'snappy', 'lz4']) {
  await step(`produce ${codec}`, async () => {
    const p = new Producer({ ...base, serializers: stringSerializers, compression: codec })
    try {
      await p.send({ messages: records(`golden-${codec}`, codec) })
    } finally {
      await p.close()
    }
  })
}

await step('idempotent', async () => {
  const p = new Producer({ ...base, serializers: stringSerializers, idempotent: true })
  try {
    await p.send({ messages: records('golden-idem', 'none') })
  } finally {
    await p.close()
  }
})

await step('transaction', async () => {
  const p = new Producer({
    ...base, serializers: stringSerializers, idempotent: true, transactionalId: 'golden-txn-platformatic'
  })
  try {
    const tx = await p.beginTransaction()
    await tx.send({ messages: records('golden-txn', 'none') })
    await tx.commit()
  } finally {
    await p.close(true)
  }
})

await step('consumer', async () => {
  const c = new Consumer({
    ...base, groupId: 'golden-platformatic-group', deserializers: stringDeserializers
  })
  try {
    const stream = await c.consume({
      topics: ['golden-lz4'], mode: 'earliest', autocommit: false, sessionTimeout: 10000,
      heartbeatInterval: 500
    })
    let got = 0
    for await (const m of stream) {
      await m.commit()
      if (++got === N) break
    }
    await new Promise((resolve) => setTimeout(resolve, 1500)) // let it heartbeat
    await stream.close()
  } finally {
    await c.close(true)
  }
})

await step('sasl', async () => {
  const a = new Admin({ ...base, sasl: { mechanism: 'PLAIN', username: 'golden', password: 'golden-secret' } })
  try {
    await a.metadata({ topics: ['golden-none'] })
  } finally {
    await a.close()
  }
})

await step('admin', async () => {
  const a = new Admin(base)
  const calls = [
    ['createTopics', () => a.createTopics({ topics: ['golden-admin'], partitions: 2, replicas: 1 })],
    ['createPartitions', () => a.createPartitions({ topics: [{ name: 'golden-admin', count: 3, assignments: [] }] })],
    ['describeConfigs', () => a.describeConfigs({ resources: [{ resourceType: 2, resourceName: 'golden-admin' }] })],
    ['alterConfigs', () => a.alterConfigs({ resources: [{ resourceType: 2, resourceName: 'golden-admin', configs: [{ name: 'retention.ms', value: '120000' }] }] })],
    ['incrementalAlterConfigs', () => a.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: 'golden-admin', configs: [{ name: 'retention.ms', configOperation: 0, value: '180000' }] }] })],
    ['listGroups', () => a.listGroups()],
    ['describeGroups', () => a.describeGroups({ groups: ['golden-platformatic-group'] })],
    ['listConsumerGroupOffsets', () => a.listConsumerGroupOffsets({ groups: ['golden-platformatic-group'] })],
    ['deleteGroups', () => a.deleteGroups({ groups: ['golden-platformatic-group'] })],
    ['deleteRecords', () => a.deleteRecords({ topics: [{ name: 'golden-none', partitions: [{ partition: 0, offset: 1n }] }] })],
    ['deleteTopics', () => a.deleteTopics({ topics: ['golden-admin'] })]
  ]
  try {
    for (const [name, fn] of calls) await step(`admin ${name}`, fn)
  } finally {
    await a.close()
  }
})
process.exit(0)
