// One consumer-group member for scenario_groups.py, driven by kafkajs 2.2.4 or
// @platformatic/kafka 1.35.0 (run from tests/node). Same JSON lines as group_worker.py:
// {"ev":"assigned","parts":[..]}, {"ev":"rec","p":P,"o":O}, {"ev":"closed"}.
//   node group_worker.mjs kafkajs|platformatic BOOTSTRAP TOPIC GROUP [--auto-commit] [--commit]
//        [--instance ID] [--session-ms N]
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(path.join(process.cwd(), 'package.json'))
const args = process.argv.slice(2)
const [client, bootstrap, topic, group] = args
const flag = (f) => args.includes(f)
const opt = (f, d) => { const i = args.indexOf(f); return i >= 0 ? args[i + 1] : d }
const autoCommit = flag('--auto-commit')
const commit = flag('--commit')
const instance = opt('--instance', null)
const sessionMs = Number(opt('--session-ms', '6000'))
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
let last = null
const report = (parts) => {
  const cur = [...parts].sort((a, b) => a - b)
  if (JSON.stringify(cur) !== JSON.stringify(last)) { out({ ev: 'assigned', parts: cur }); last = cur }
}

async function kafkajs () {
  const { Kafka, logLevel } = require('kafkajs')
  const kafka = new Kafka({ clientId: 'gw', brokers: [bootstrap], logLevel: logLevel.NOTHING })
  const c = kafka.consumer({ groupId: group, sessionTimeout: sessionMs, heartbeatInterval: 500, rebalanceTimeout: 20000 })
  c.on(c.events.GROUP_JOIN, (e) => report(e.payload.memberAssignment[topic] || []))
  await c.connect()
  await c.subscribe({ topic, fromBeginning: true })
  await c.run({
    autoCommit,
    autoCommitInterval: 300,
    eachMessage: async ({ partition, message }) => {
      if (commit) {
        await c.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }])
      }
      out({ ev: 'rec', p: partition, o: Number(message.offset) })
    }
  })
  process.on('SIGTERM', async () => { await c.disconnect(); out({ ev: 'closed' }); process.exit(0) })
}

async function platformatic () {
  const { Consumer } = require('@platformatic/kafka')
  const c = new Consumer({
    groupId: group, clientId: 'gw', bootstrapBrokers: [bootstrap], sessionTimeout: sessionMs,
    heartbeatInterval: 500, rebalanceTimeout: 20000, groupInstanceId: instance ?? undefined, maxWaitTime: 500
  })
  const stream = await c.consume({ topics: [topic], mode: 'committed', fallbackMode: 'earliest', autocommit: autoCommit ? 300 : false })
  const timer = setInterval(() => {
    const a = (c.assignments || []).filter((x) => x.topic === topic).flatMap((x) => x.partitions)
    report(a)
  }, 100)
  process.on('SIGTERM', async () => {
    clearInterval(timer)
    await stream.close()
    await c.close()
    out({ ev: 'closed' })
    process.exit(0)
  })
  for await (const m of stream) {
    if (commit) await m.commit()
    out({ ev: 'rec', p: m.partition, o: Number(m.offset) })
  }
}

// One-shot admin operations: node group_worker.mjs CLIENT BOOTSTRAP admin list|describe|delete GROUP
// print {"result": ...}: list -> group ids, describe -> {state, members}, delete -> null or the
// Kafka error name.
async function adminOp (op, g) {
  if (client === 'kafkajs') {
    const { Kafka, logLevel } = require('kafkajs')
    const a = new Kafka({ clientId: 'gw-admin', brokers: [bootstrap], logLevel: logLevel.NOTHING }).admin()
    await a.connect()
    try {
      if (op === 'list') return (await a.listGroups()).groups.map((x) => x.groupId)
      if (op === 'describe') {
        const d = (await a.describeGroups([g])).groups[0]
        return { state: d.state, members: d.members.length }
      }
      try { await a.deleteGroups([g]); return null } catch (e) {
        return (e.groups && e.groups[0] && e.groups[0].error && e.groups[0].error.type) || e.type || e.message
      }
    } finally { await a.disconnect() }
  }
  const { Admin } = require('@platformatic/kafka')
  const a = new Admin({ clientId: 'gw-admin', bootstrapBrokers: [bootstrap] })
  try {
    if (op === 'list') return [...(await a.listGroups()).keys()]
    if (op === 'describe') {
      const d = (await a.describeGroups({ groups: [g] })).get(g)
      return { state: d.state, members: d.members.size ?? d.members.length }
    }
    try { await a.deleteGroups({ groups: [g] }); return null } catch (e) {
      const inner = (x) => x && ((x.errors && x.errors.map(inner).find(Boolean)) || x.apiId || (x.cause && inner(x.cause)))
      return inner(e) || e.message
    }
  } finally { await a.close() }
}

if (topic === 'admin') {
  adminOp(args[3], args[4]).then((r) => { out({ result: r }); process.exit(0) },
    (e) => { out({ error: String(e && e.stack) }); process.exit(1) })
} else {
  (client === 'kafkajs' ? kafkajs() : platformatic()).catch((e) => { out({ ev: 'error', error: String(e && e.stack) }); process.exit(1) })
}
