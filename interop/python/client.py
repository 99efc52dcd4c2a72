"""eventlog's wire contract from confluent-kafka-python, with its default settings.

The interop tests (internal/e2e/interop) run it as

    python3 client.py <plan.json> <out.jsonl>

The plan (interop.Plan) names the broker, the topics, a consumer group, the
command records to produce (key: the entity id) and what to wait for. The
client subscribes its group to the results and events topics from the start,
produces the commands, and writes every record it consumes of its own entities
to out.jsonl, one JSON object a line, in the order it got them; it exits 0 once
it has them all, 1 on an error or at the plan's deadline.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer


def main(plan_path, out_path):
    with open(plan_path) as f:
        plan = json.load(f)
    brokers = ",".join(plan["brokers"])
    mine = set(plan["entities"])
    results, events = set(), {}

    def done():
        return all(c in results for c in plan.get("want_results") or []) and all(
            events.get(e, 0) >= plan["want_events"][e] for e in plan["entities"]
        )

    # The group reads from the start of the topics: a new group's default is
    # their end.
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": plan["group"], "auto.offset.reset": "earliest"})
    consumer.subscribe(plan["read_topics"])

    if plan.get("commands"):
        producer = Producer({"bootstrap.servers": brokers})
        failed = []

        def delivered(err, _msg):
            if err is not None:
                failed.append(err)

        for c in plan["commands"]:
            producer.produce(plan["commands_topic"], key=c["key"], value=json.dumps(c["value"]), on_delivery=delivered)
        if producer.flush(30) != 0 or failed:
            raise RuntimeError(f"commands not delivered: {failed}")

    deadline = time.monotonic() + plan["timeout_ms"] / 1000
    with open(out_path, "w") as out:
        try:
            while not done():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deadline: results {len(results)}/{len(plan['want_results'])}, events {events}")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    raise KafkaException(msg.error())
                key = None if msg.key() is None else msg.key().decode()
                if key not in mine:
                    continue
                headers = [[k, None if v is None else v.decode()] for k, v in (msg.headers() or [])]
                value = msg.value().decode()
                out.write(json.dumps({"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                                      "key": key, "headers": headers, "value": value}) + "\n")
                if msg.topic() == plan["results_topic"]:
                    results.add(json.loads(value)["command_id"])
                elif msg.topic() == plan["events_topic"]:
                    events[key] = events.get(key, 0) + 1
        finally:
            consumer.close()


if __name__ == "__main__":
    try:
        main(*sys.argv[1:3])
    except Exception as e:  # one line for the test's log
        print(f"confluent-kafka client: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
