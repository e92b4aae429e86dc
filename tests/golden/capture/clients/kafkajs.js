// Golden capture driver for kafkajs 2.2.4: produces 5 records (key k<i>, value v<i>-<codec>:PAD)
// uncompressed and with gzip (the only codec kafkajs has built in), an idempotent producer, a
// transaction with offsets, a group consumer, SASL/PLAIN and the admin calls.
// Usage: node kafkajs.js HOST:PORT   (run from tests/node so node_modules resolves)
const path = require('node:path')
const { createRequire } = require('node:module')
const req = createRequire(path.join(process.cwd(), 'package.json'))
const { Kafka, CompressionTypes, logLevel } = req('kafkajs')

const N = 5
const PAD = '0123456789abcdef'.repeat(8) // compressible, so every codec really compresses
const kafka = new Kafka({ clientId: 'golden-kafkajs', brokers: [process.argv[2]], logLevel: logLevel.NOTHING, retry: { retries: 2 } })
setTimeout(() => { console.error('kafkajs: overall timeout'); process.exit(0) }, 60000).unref()

async function step (name, fn) {
  try {
    await fn()
  } catch (e) {
    console.error(`kafkajs ${name}: ${e.message}`)
  }
}
function messages (codec) {
  const out = []
  for (let i = 0; i < N; i++) out.push({ key: `k${i}`, value: `v${i}-${codec}:${PAD}` })
  return out
}

async function main () {
  for (const [codec, ct] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    await step(`produce ${codec}`, async () => {
      const p = kafka.producer()
      await p.connect()
      await p.send({ topic: `golden-${codec}`, compression: ct, messages: messages(codec) })
      await p.disconnect()
    })
  }
  await step('idempotent', async () => {
    const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await p.connect()
    await p.send({ topic: 'golden-idem', acks: -1, messages: messages('none') })
    await p.disconnect()
  })
  await step('transaction', async () => {
    const p = kafka.producer({ transactionalId: 'golden-txn-kafkajs', idempotent: true, maxInFlightRequests: 1 })
    await p.connect()
    const tx = await p.transaction()
    await tx.send({ topic: 'golden-txn', messages: messages('none') })
    await tx.sendOffsets({ consumerGroupId: 'golden-txn-group', topics: [{ topic: 'golden-txn', partitions: [{ partition: 0, offset: '5' }] }] })
    await tx.commit()
    await p.disconnect()
  })
  await step('consumer', async () => {
    const c = kafka.consumer({ groupId: 'golden-kafkajs-group', heartbeatInterval: 300 })
    await c.connect()
    await c.subscribe({ topic: 'golden-gzip', fromBeginning: true })
    let got = 0
    await new Promise((resolve) => {
      setTimeout(resolve, 10000).unref()
      c.run({
        autoCommit: false,
        eachMessage: async ({ topic, partition, message }) => {
          got++
          await c.commitOffsets([{ topic, partition, offset: (Number(message.offset) + 1).toString() }])
          if (got === N) setTimeout(resolve, 1000)
        }
      })
    })
    await c.disconnect()
  })
  await step('sasl', async () => {
    const k = new Kafka({
      clientId: 'golden-kafkajs', brokers: [process.argv[2]], logLevel: logLevel.NOTHING,
      sasl: { mechanism: 'plain', username: 'golden', password: 'golden-secret' }
    })
    const sa = k.admin()
    await sa.connect()
    await sa.fetchTopicMetadata({ topics: ['golden-none'] })
    await sa.disconnect()
  })
  const a = kafka.admin()
  await step('admin connect', () => a.connect())
  const calls = [
    ['createTopics', () => a.createTopics({ topics: [{ topic: 'golden-admin', numPartitions: 2, replicationFactor: 1 }] })],
    ['createPartitions', () => a.createPartitions({ topicPartitions: [{ topic: 'golden-admin', count: 3 }] })],
    ['describeConfigs', () => a.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: 'golden-admin' }] })],
    ['alterConfigs', () => a.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: 'golden-admin', configEntries: [{ name: 'retention.ms', value: '120000' }] }] })],
    ['fetchTopicOffsets', () => a.fetchTopicOffsets('golden-none')],
    ['fetchOffsets', () => a.fetchOffsets({ groupId: 'golden-kafkajs-group', topics: ['golden-gzip'] })],
    ['listGroups', () => a.listGroups()],
    ['describeGroups', () => a.describeGroups(['golden-kafkajs-group'])],
    ['describeCluster', () => a.describeCluster()],
    ['deleteGroups', () => a.deleteGroups(['golden-kafkajs-group'])],
    ['deleteTopicRecords', () => a.deleteTopicRecords({ topic: 'golden-none', partitions: [{ partition: 0, offset: '1' }] })],
    ['deleteTopics', () => a.deleteTopics({ topics: ['golden-admin'] })]
  ]
  for (const [name, fn] of calls) await step(`admin ${name}`, fn)
  await step('admin disconnect', () => a.disconnect())
}
main().then(() => process.exit(0))
