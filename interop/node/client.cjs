// eventlog's wire contract from kafkajs, with kafkajs's default settings: the
// interop tests (internal/e2e/interop) run it as
//
//	node client.cjs <plan.json> <out.jsonl>
//
// The plan (interop.Plan) names the broker, the topics, a consumer group, the
// command records to produce (key: the entity id) and what to wait for. The
// client subscribes its group to the results and events topics from the
// start, produces the commands, and writes every record it consumes of its
// own entities to out.jsonl, one JSON object a line, in the order it got them;
// it exits 0 once it has them all, 1 on an error or at the plan's deadline.
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [planPath, outPath] = process.argv.slice(2)
  const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'))
  const out = fs.openSync(outPath, 'w')
  const kafka = new Kafka({ clientId: 'eventlog-interop-kafkajs', brokers: plan.brokers, logLevel: logLevel.WARN })

  const mine = new Set(plan.entities)
  const results = new Set()
  const events = new Map()
  const done = () =>
    (plan.want_results || []).every((id) => results.has(id)) &&
    plan.entities.every((id) => (events.get(id) || 0) >= plan.want_events[id])

  const consumer = kafka.consumer({ groupId: plan.group })
  let finish
  const finished = new Promise((resolve, reject) => {
    finish = { resolve, reject }
  })
  consumer.on(consumer.events.CRASH, (e) => finish.reject(e.payload.error))
  const timer = setTimeout(() => finish.reject(new Error(`deadline: results ${results.size}/${(plan.want_results || []).length}, events ${JSON.stringify([...events])}`)), plan.timeout_ms)

  await consumer.connect()
  await consumer.subscribe({ topics: plan.read_topics, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const key = message.key === null ? null : message.key.toString()
      if (!mine.has(key)) return
      const headers = Object.entries(message.headers || {}).map(([k, v]) => [k, v === undefined || v === null ? null : v.toString()])
      fs.writeSync(out, JSON.stringify({ topic, partition, offset: Number(message.offset), key, headers, value: message.value.toString() }) + '\n')
      if (topic === plan.results_topic) {
        results.add(JSON.parse(message.value.toString()).command_id)
      } else if (topic === plan.events_topic) {
        events.set(key, (events.get(key) || 0) + 1)
      }
      if (done()) finish.resolve()
    },
  })

  if ((plan.commands || []).length > 0) {
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({
      topic: plan.commands_topic,
      messages: plan.commands.map((c) => ({ key: c.key, value: JSON.stringify(c.value) })),
    })
    await producer.disconnect()
  }

  try {
    await finished
  } finally {
    clearTimeout(timer)
    await consumer.disconnect()
    fs.closeSync(out)
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`kafkajs client: ${e && e.name}: ${e && e.message}`)
    process.exit(1)
  },
)
