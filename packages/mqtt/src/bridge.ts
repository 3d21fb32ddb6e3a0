/**
 * The MQTT bridge: ingests device topics into a Herald topic and sends commands back to
 * devices. It is not a transport: MQTT has no partitions, no consumer groups with positions, no
 * replay; the bridge turns one into the other at the edge.
 *
 * Ingest, and when the broker is told a message is done:
 * - The bridge subscribes at QoS 1 (optionally as a shared subscription `$share/<group>/…`) with a
 *   persistent session: Clean Start 0 and a Session Expiry Interval, so the broker keeps the
 *   subscriptions and queues messages while the bridge is away, and resends the ones it had sent
 *   but not seen acknowledged when the bridge comes back (MQTT 5 §4.4: same packet ids, DUP set).
 * - A QoS 1 message is acknowledged (PUBACK) only after `transport.publish` resolved for it, i.e.
 *   after the Herald publish committed. mqtt.js would PUBACK on its own as soon as its
 *   `handleMessage` hook calls back; delaying that callback (or `customHandleAcks`'s) stalls
 *   mqtt.js's whole incoming packet pump — one message at a time, and no PINGRESP or command
 *   PUBACK gets through meanwhile. So the bridge calls back at once with a marker error, which
 *   makes mqtt.js skip its PUBACK and read the next packet, and writes each PUBACK itself once
 *   the message committed, in the order the messages arrived (MQTT 5 §4.6 requires that order).
 * - Messages are published in arrival order, one `transport.publish` call at a time; what arrives
 *   meanwhile forms the next batch (at most `maxBatch`). The broker sends at most `maxInFlight`
 *   unacknowledged messages (the Receive Maximum the bridge announces).
 * - When a publish fails with a retryable error, the bridge acknowledges nothing more on that
 *   connection, drops what it has not published yet and reconnects; the broker then resends every
 *   unacknowledged message. A message can therefore reach Herald more than once (at least once);
 *   a redelivery carries the same event id (see `derivedId`), so an inbox recognises it.
 * - A message that cannot be published at all (a non-retryable error such as
 *   HERALD_ERR_PAYLOAD_TOO_LARGE) is handed to `onRejected` (awaited) and then acknowledged with
 *   reason code 0x83, so it does not come back forever. Messages whose CloudEvents attributes are
 *   unusable are not rejected: the bridge builds the event itself (see mapping.ts).
 * - Per-device order is kept from the broker to the Herald topic for one bridge instance (device
 *   id = partition key). With several instances on a shared subscription the broker deals
 *   messages round-robin, so one device's messages are published by several instances
 *   concurrently: every message arrives, but per-device order is not guaranteed.
 *
 * Commands: `sendCommand` publishes a CloudEvent in binary mode at QoS 1 to the device's command
 * topic and resolves on the broker's PUBACK.
 *
 * `close()` is idempotent and draining: it stops taking new messages (those stay unacknowledged
 * in the broker's session and come back to the next bridge with this client id), publishes and
 * acknowledges what it already took, waits for commands awaiting PUBACK, then disconnects — all
 * within `timeoutMs`, after which it abandons the rest (unacknowledged, so redelivered).
 */
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import {
  type CloudEvent,
  type Clock,
  createEnvelope,
  type EnvelopeInput,
  HeraldError,
  isRetryable,
  type OutgoingMessage,
  systemClock,
  TOPIC_NAME_RE,
  type Transport,
} from '@herald/core';
import { defaultDeviceId, defaultType, filterProblem, topicProblem } from './filters.ts';
import { defaultSource, envelopeFromMqtt, toMqttBinary } from './mapping.ts';

export interface MqttBridgeOptions {
  /** Broker URL, e.g. `mqtt://127.0.0.1:1883` (mqtts://, ws://, wss:// as mqtt.js supports). */
  readonly url: string;
  /**
   * MQTT client id. It names the persistent session: a bridge that restarts with the same id gets
   * the messages queued meanwhile. Every instance needs its own (also in a share group).
   */
  readonly clientId: string;
  /** Where ingested events go. */
  readonly transport: Transport;
  /** The Herald topic ingested events are published to. */
  readonly topic: string;
  /** MQTT topic filters to ingest, e.g. `['devices/+/telemetry']` (wildcards allowed; no `$share/` prefix — see `shareGroup`). */
  readonly subscriptions: readonly string[];
  /** Subscription QoS (default 1). At 0 nothing is acknowledged and nothing is redelivered. */
  readonly qos?: 0 | 1;
  /** Subscribe as `$share/<shareGroup>/<filter>`: the instances of a group split the messages. */
  readonly shareGroup?: string;
  /** CloudEvents `source` of events the bridge builds (default `mqtt://<host>/<mqtt topic>`). */
  readonly source?: string | ((mqttTopic: string) => string);
  /** Device id (= partition key and `subject`) of a topic (default: the level the filter's first `+` matched; see filters.ts). */
  readonly deviceIdFrom?: (mqttTopic: string) => string;
  /** Event type of a topic when the device sends none (default: the topic's levels without the device level, joined by dots). */
  readonly typeFrom?: (mqttTopic: string) => string;
  /** Command topic of a device (default `devices/<deviceId>/commands`). */
  readonly commandTopic?: (deviceId: string) => string;
  /** CloudEvents `source` of commands (default `herald-mqtt-bridge/<clientId>`). */
  readonly commandSource?: string;
  /**
   * MQTT 5 Session Expiry Interval in seconds (default 3600): how long the broker keeps the
   * session — subscriptions and queued messages — after the bridge disconnects. 0 ends the
   * session at every disconnect, and with it queueing while the bridge is down.
   */
  readonly sessionExpirySeconds?: number;
  /** Receive Maximum: unacknowledged messages the broker may have out to the bridge at once (default 100, 1–65535). */
  readonly maxInFlight?: number;
  /** Messages per `transport.publish` call at most (default: `maxInFlight`). */
  readonly maxBatch?: number;
  /** Wait between reconnect attempts, ms (default 1000). */
  readonly reconnectPeriodMs?: number;
  /** Timeout of one connect attempt, ms (default 10 000). */
  readonly connectTimeoutMs?: number;
  /** MQTT keep-alive, seconds (default 30). */
  readonly keepaliveSeconds?: number;
  /** Default time limit of `sendCommand`, ms (default 30 000; 0 waits without limit). */
  readonly commandTimeoutMs?: number;
  /** Extra mqtt.js options (credentials, TLS…). The session, QoS and reconnect options above win over these. */
  readonly mqttOptions?: Omit<IClientOptions, 'clientId' | 'clean' | 'protocolVersion' | 'reconnectPeriod' | 'resubscribe' | 'customHandleAcks'>;
  readonly clock?: Clock;
  /** Errors the bridge handled itself (a failed publish before redelivery, connection errors, events it had to rebuild). */
  readonly onError?: (error: unknown) => void;
  /** A message that cannot be published at all; awaited before the message is acknowledged (and gone from the broker). */
  readonly onRejected?: (rejected: RejectedMessage) => void | Promise<void>;
}

export interface RejectedMessage {
  readonly mqttTopic: string;
  readonly payload: Buffer;
  readonly error: unknown;
  /** The envelope the bridge built, when it got that far. */
  readonly envelope?: CloudEvent;
}

export interface MqttBridgeStats {
  /** QoS 0/1 messages taken from the broker (redeliveries counted again). */
  readonly received: number;
  /** Of those, deliveries the broker flagged as redeliveries (DUP). */
  readonly redelivered: number;
  /** Messages the Herald publish committed. */
  readonly published: number;
  /** PUBACKs written to the broker. */
  readonly acked: number;
  /** Messages given up (onRejected, PUBACK 0x83). */
  readonly rejected: number;
  /** Messages whose CloudEvents attributes were unusable and were rebuilt by the bridge. */
  readonly rebuilt: number;
  /** `transport.publish` calls that failed retryably (each forced a reconnect). */
  readonly publishFailures: number;
  /** Successful connections (the first included). */
  readonly connects: number;
  /** `transport.publish` calls made. */
  readonly batches: number;
  /** Messages taken but not yet acknowledged. */
  readonly inFlight: number;
  /** Commands acknowledged by the broker. */
  readonly commandsSent: number;
}

/** What `sendCommand` sends. The CloudEvents `source` defaults to the bridge's `commandSource`. */
export type CommandInput = Omit<EnvelopeInput, 'source' | 'partitionkey'> & { readonly source?: string };

export interface SendCommandOptions {
  /** MQTT topic (default: the bridge's `commandTopic(deviceId)`). */
  readonly topic?: string;
  /** Time limit, ms (default: the bridge's `commandTimeoutMs`; 0 waits without limit). */
  readonly timeoutMs?: number;
  /** MQTT 5 Message Expiry Interval, seconds: the broker drops the command if the device has not received it by then. */
  readonly messageExpirySeconds?: number;
  /** Copies the correlation id (or uses its id) and sets the causation id, as the publisher does. */
  readonly causedBy?: CloudEvent;
}

export interface CommandReceipt {
  readonly topic: string;
  readonly envelope: CloudEvent;
  /**
   * The broker's PUBACK said "no matching subscribers" (0x10): no session is subscribed to the
   * command topic, so the broker dropped the command. With a device that keeps a persistent
   * session, a command to an offline device is queued instead, and this is false.
   */
  readonly noMatchingSubscribers: boolean;
}

export interface MqttBridge {
  readonly clientId: string;
  /** Resolves once connected and subscribed the first time; rejects when a subscription is refused or the bridge is closed first. */
  readonly ready: Promise<void>;
  /**
   * Publishes a command to a device at QoS 1; resolves on the broker's PUBACK (the broker has it,
   * not necessarily the device). While disconnected the command waits and is sent on reconnect.
   * Rejects with HERALD_ERR_INVALID_ARGUMENT for a bad device id or topic, HERALD_ERR_CLOSED after
   * close() (also for a command still awaiting its PUBACK when close() gives up), and
   * HERALD_ERR_TRANSIENT on a broker error or after the time limit — after a time limit or a
   * close the command may still reach the device (at least once). Safe to call concurrently.
   */
  sendCommand(deviceId: string, command: CommandInput, options?: SendCommandOptions): Promise<CommandReceipt>;
  stats(): MqttBridgeStats;
  /** Whether the MQTT connection is up right now. */
  connected(): boolean;
  /**
   * Idempotent, draining (see the module doc). `endSession: true` tells the broker to discard the
   * session — its subscriptions and queued messages — instead of keeping it for a restart.
   */
  close(options?: { timeoutMs?: number; endSession?: boolean }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** What the bridge reads of mqtt.js internals: PUBACKs are written with its own packet writer. */
interface ClientInternals {
  _sendPacket(packet: { cmd: 'puback'; messageId: number; reasonCode: number }, cb?: (err?: Error) => void): void;
}

/** Passed to mqtt.js's handleMessage callback: skip your PUBACK, the bridge sends it after commit. */
const DEFERRED = Object.freeze(new Error('herald-mqtt-bridge: PUBACK deferred until the Herald publish commits'));

const REASON_IMPLEMENTATION_SPECIFIC_ERROR = 0x83;
const REASON_NO_MATCHING_SUBSCRIBERS = 0x10;

interface Entry {
  /** Connection generation the message arrived on; its PUBACK is only valid on that connection. */
  readonly gen: number;
  readonly packetId: number | undefined;
  readonly mqttTopic: string;
  readonly payload: Buffer;
  message?: OutgoingMessage;
  /** Error that makes the message unpublishable. */
  rejectError?: unknown;
  done: boolean;
  reasonCode: number;
}

export function createMqttBridge(options: MqttBridgeOptions): MqttBridge {
  return new Bridge(options);
}

class Bridge implements MqttBridge {
  readonly clientId: string;
  readonly ready: Promise<void>;
  readonly #o: MqttBridgeOptions;
  readonly #client: MqttClient;
  readonly #clock: Clock;
  readonly #filters: readonly string[];
  readonly #host: string;
  readonly #qos: 0 | 1;
  readonly #maxBatch: number;
  readonly #commandTimeoutMs: number;
  readonly #commandTopic: (deviceId: string) => string;
  readonly #commandSource: string;
  #resolveReady!: () => void;
  #rejectReady!: (e: unknown) => void;
  #isReady = false;

  /** Bumped on every connect and close: PUBACKs are only written for entries of the current one. */
  #gen = 0;
  /** Taken, not yet published (current generation only). */
  #pending: Entry[] = [];
  /** Taken, not yet acknowledged, in arrival order (current generation only). */
  #unacked: Entry[] = [];
  #pumping: Promise<void> | undefined;
  #closing = false;
  #closePromise: Promise<void> | undefined;
  /** Commands awaiting the broker's PUBACK: their settled promise, and how to fail them at close. */
  readonly #commands = new Map<Promise<unknown>, (e: HeraldError) => void>();
  /** PUBACK reason codes of our own publishes, by packet id, caught before mqtt.js handles the PUBACK. */
  readonly #pubackCodes = new Map<number, number>();
  readonly #s = { received: 0, redelivered: 0, published: 0, acked: 0, rejected: 0, rebuilt: 0, publishFailures: 0, connects: 0, batches: 0, commandsSent: 0 };

  constructor(o: MqttBridgeOptions) {
    const problems = optionProblems(o);
    if (problems.length > 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `createMqttBridge: ${problems.join('; ')}`, { details: { problems } });
    this.#o = o;
    this.clientId = o.clientId;
    this.#clock = o.clock ?? systemClock;
    this.#filters = [...o.subscriptions];
    this.#host = new URL(o.url).host;
    this.#qos = o.qos ?? 1;
    const maxInFlight = o.maxInFlight ?? 100;
    this.#maxBatch = o.maxBatch ?? maxInFlight;
    this.#commandTimeoutMs = o.commandTimeoutMs ?? 30_000;
    this.#commandTopic = o.commandTopic ?? ((id) => `devices/${id}/commands`);
    this.#commandSource = o.commandSource ?? `herald-mqtt-bridge/${encodeURIComponent(o.clientId)}`;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // callers that never await ready do not get an unhandled rejection

    const client = mqtt.connect(o.url, {
      ...o.mqttOptions,
      protocolVersion: 5,
      clientId: o.clientId,
      clean: false,
      resubscribe: false, // the bridge subscribes on every connect itself
      reconnectPeriod: o.reconnectPeriodMs ?? 1000,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      keepalive: o.keepaliveSeconds ?? 30,
      properties: {
        ...o.mqttOptions?.properties,
        sessionExpiryInterval: o.sessionExpirySeconds ?? 3600,
        receiveMaximum: maxInFlight,
      },
    });
    this.#client = client;
    if (typeof (client as unknown as Partial<ClientInternals>)._sendPacket !== 'function') {
      client.end(true);
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'this mqtt.js version has no MqttClient._sendPacket; the bridge needs it to send PUBACKs after commit (tested with mqtt 5.16)');
    }
    // Installed before the first packet can arrive: a resumed session sends queued messages right after CONNACK.
    client.handleMessage = (packet, callback) => this.#onPublish(packet, callback);
    client.on('connect', (connack) => {
      this.#gen++;
      this.#s.connects++;
      this.#pending = [];
      this.#unacked = [];
      void this.#subscribe(connack.sessionPresent);
    });
    client.on('close', () => {
      // Whatever was taken on the closed connection is unacknowledged at the broker and comes again.
      this.#gen++;
      this.#pending = [];
      this.#unacked = [];
    });
    client.on('packetreceive', (p) => {
      if (p.cmd === 'puback' && p.reasonCode !== undefined && p.reasonCode !== 0 && p.messageId !== undefined) this.#pubackCodes.set(p.messageId, p.reasonCode);
    });
    client.on('error', (e) => this.#report(e));
  }

  connected(): boolean {
    return this.#client.connected;
  }

  stats(): MqttBridgeStats {
    return { ...this.#s, inFlight: this.#unacked.length };
  }

  async #subscribe(sessionPresent: boolean): Promise<void> {
    const filters = this.#filters.map((f) => (this.#o.shareGroup ? `$share/${this.#o.shareGroup}/${f}` : f));
    try {
      // rh 1: retained messages only when the subscription is new, so a resumed session does not re-ingest them.
      const granted = await this.#client.subscribeAsync(filters, { qos: this.#qos, rh: 1 });
      const refused = granted.filter((g) => g.qos >= 0x80);
      if (refused.length > 0) {
        const e = new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the broker refused subscription(s) ${refused.map((g) => `${g.topic} (reason 0x${g.qos.toString(16)})`).join(', ')}`, {
          details: { refused, sessionPresent },
        });
        this.#report(e);
        if (!this.#isReady) this.#rejectReady(e);
        return;
      }
      if (!this.#isReady) {
        this.#isReady = true;
        this.#resolveReady();
      }
    } catch (e) {
      // The connection dropped mid-subscribe: the next connect subscribes again.
      if (!this.#closing) this.#report(e);
    }
  }

  #onPublish(packet: IPublishPacket, callback: (error?: Error) => void): void {
    if (packet.qos === 0) {
      if (this.#closing) return callback();
      this.#take(packet, false);
      return callback();
    }
    // QoS 1: keep mqtt.js's pump moving but make it skip its own PUBACK (see the module doc).
    callback(DEFERRED);
    // Closing: leave it unacknowledged; the broker keeps it in the session for the next bridge.
    if (this.#closing) return;
    this.#take(packet, true);
  }

  #take(packet: IPublishPacket, ack: boolean): void {
    this.#s.received++;
    if (packet.dup) this.#s.redelivered++;
    const mqttTopic = packet.topic;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const entry: Entry = { gen: this.#gen, packetId: ack ? packet.messageId : undefined, mqttTopic, payload, done: false, reasonCode: 0 };
    try {
      const deviceId = this.#o.deviceIdFrom ? this.#o.deviceIdFrom(mqttTopic) : defaultDeviceId(this.#filters, mqttTopic);
      const type = this.#o.typeFrom ? this.#o.typeFrom(mqttTopic) : defaultType(this.#filters, mqttTopic);
      const src = this.#o.source;
      const source = typeof src === 'function' ? src(mqttTopic) : src ?? defaultSource(this.#host, mqttTopic);
      if (typeof deviceId !== 'string' || deviceId.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `deviceIdFrom returned ${JSON.stringify(deviceId)} for "${mqttTopic}"; it must return a non-empty string`);
      const result = envelopeFromMqtt(
        { topic: mqttTopic, payload, packetId: packet.messageId, contentType: packet.properties?.contentType, userProperties: packet.properties?.userProperties },
        { clientId: this.clientId, deviceId, type, source, now: this.#clock.now() },
      );
      if (result.problem) {
        this.#s.rebuilt++;
        this.#report(result.problem);
      }
      entry.message = { envelope: result.envelope, key: deviceId };
    } catch (e) {
      entry.rejectError = e;
    }
    this.#pending.push(entry);
    if (ack) this.#unacked.push(entry);
    if (!this.#pumping) this.#pumping = this.#pump().finally(() => (this.#pumping = undefined));
  }

  /** Publishes pending entries, one transport call at a time, in arrival order; acknowledges the committed prefix after each. */
  async #pump(): Promise<void> {
    // Let the messages that arrived in the same read join the first batch.
    await new Promise<void>((r) => setImmediate(r));
    while (this.#pending.length > 0) {
      const gen = this.#gen;
      const batch = this.#pending.splice(0, this.#maxBatch);
      const ok = await this.#publish(batch);
      if (!ok) {
        if (gen === this.#gen) this.#reconnect();
        continue;
      }
      for (const e of batch) if (e.rejectError !== undefined) await this.#reject(e);
      this.#flushAcks();
    }
  }

  /** True when every entry of the batch is published or rejected; false after a retryable failure. */
  async #publish(batch: Entry[]): Promise<boolean> {
    const good = batch.filter((e) => e.message !== undefined && e.rejectError === undefined);
    if (good.length > 0) {
      try {
        this.#s.batches++;
        await this.#o.transport.publish(this.#o.topic, good.map((e) => e.message!));
        this.#s.published += good.length;
        for (const e of good) e.done = true;
      } catch (error) {
        if (isRetryable(error)) {
          this.#s.publishFailures++;
          this.#report(error);
          return false;
        }
        if (good.length === 1) good[0]!.rejectError = error;
        else {
          // Find the message(s) the transport refuses: one by one, still in order.
          for (const e of good) {
            const ok = await this.#publish([e]);
            if (!ok) return false;
          }
        }
      }
    }
    return true;
  }

  async #reject(e: Entry): Promise<void> {
    this.#s.rejected++;
    this.#report(e.rejectError);
    try {
      const r: RejectedMessage = { mqttTopic: e.mqttTopic, payload: e.payload, error: e.rejectError, ...(e.message ? { envelope: e.message.envelope } : {}) };
      await this.#o.onRejected?.(r);
    } catch (err) {
      this.#report(err);
    }
    e.reasonCode = REASON_IMPLEMENTATION_SPECIFIC_ERROR;
    e.done = true;
  }

  /** Writes PUBACKs for the settled prefix of the current connection's messages, in arrival order. */
  #flushAcks(): void {
    const q = this.#unacked;
    let n = 0;
    while (n < q.length && q[n]!.done) n++;
    if (n === 0) return;
    const settled = q.splice(0, n);
    for (const e of settled) {
      if (e.gen !== this.#gen || !this.#client.connected) return;
      (this.#client as unknown as ClientInternals)._sendPacket({ cmd: 'puback', messageId: e.packetId!, reasonCode: e.reasonCode });
      this.#s.acked++;
    }
  }

  /** After a failed publish: acknowledge nothing more on this connection and reconnect, so the broker resends. */
  #reconnect(): void {
    this.#gen++;
    this.#pending = [];
    this.#unacked = [];
    if (this.#closing) return;
    // mqtt.js sees the stream close and reconnects after reconnectPeriod, resuming the session.
    this.#client.stream?.destroy();
  }

  async sendCommand(deviceId: string, command: CommandInput, options: SendCommandOptions = {}): Promise<CommandReceipt> {
    if (this.#closing) throw new HeraldError('HERALD_ERR_CLOSED', `MQTT bridge "${this.clientId}" is closed`);
    if (typeof deviceId !== 'string' || deviceId.length === 0 || /[/+#\u0000]/.test(deviceId)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `device id must be a non-empty string without '/', '+', '#' or NUL (got ${JSON.stringify(deviceId)})`);
    }
    const topic = options.topic ?? this.#commandTopic(deviceId);
    const tp = topicProblem(topic);
    if (tp) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `command topic: ${tp}`);
    const cause = options.causedBy;
    const envelope = createEnvelope(
      {
        ...command,
        source: command.source ?? this.#commandSource,
        ...(command.subject === undefined ? { subject: deviceId } : {}),
        ...(command.correlationid === undefined && cause ? { correlationid: cause.correlationid ?? cause.id } : {}),
        ...(command.causationid === undefined && cause ? { causationid: cause.id } : {}),
      },
      this.#clock.now(),
    );
    const out = toMqttBinary(envelope);
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    let fail!: (e: HeraldError) => void;
    const p = new Promise<CommandReceipt>((resolve, reject) => {
      let settled = false;
      fail = (e) => {
        if (settled) return;
        settled = true;
        timer?.cancel();
        reject(e);
      };
      const timer =
        timeoutMs > 0
          ? this.#clock.setTimer(() => {
              if (settled) return;
              settled = true;
              reject(new HeraldError('HERALD_ERR_TRANSIENT', `command "${envelope.id}" to "${topic}" was not acknowledged by the broker within ${timeoutMs} ms; it may still be sent`, { details: { topic, id: envelope.id, timeoutMs } }));
            }, timeoutMs)
          : undefined;
      this.#client.publish(
        topic,
        out.payload,
        {
          qos: 1,
          properties: {
            userProperties: out.userProperties,
            ...(out.contentType !== undefined ? { contentType: out.contentType } : {}),
            ...(options.messageExpirySeconds !== undefined ? { messageExpiryInterval: options.messageExpirySeconds } : {}),
          },
        },
        (err, packet) => {
          timer?.cancel();
          const id = packet?.messageId;
          const code = id === undefined ? undefined : this.#pubackCodes.get(id);
          if (id !== undefined) this.#pubackCodes.delete(id);
          if (settled) return;
          settled = true;
          if (err) {
            reject(new HeraldError('HERALD_ERR_TRANSIENT', `command "${envelope.id}" to "${topic}" failed: ${err.message}`, { cause: err, details: { topic, id: envelope.id } }));
            return;
          }
          this.#s.commandsSent++;
          resolve({ topic, envelope, noMatchingSubscribers: code === REASON_NO_MATCHING_SUBSCRIBERS });
        },
      );
    });
    const tracked = p.catch(() => {});
    this.#commands.set(tracked, fail);
    void tracked.finally(() => this.#commands.delete(tracked));
    return p;
  }

  close(options: { timeoutMs?: number; endSession?: boolean } = {}): Promise<void> {
    if (!this.#closePromise) this.#closePromise = this.#close(options.timeoutMs ?? 10_000, options.endSession ?? false);
    return this.#closePromise;
  }

  async #close(timeoutMs: number, endSession: boolean): Promise<void> {
    this.#closing = true;
    if (!this.#isReady) this.#rejectReady(new HeraldError('HERALD_ERR_CLOSED', `MQTT bridge "${this.clientId}" was closed before it was ready`));
    const deadline = this.#clock.monotonic() + timeoutMs;
    const left = (): number => Math.max(0, deadline - this.#clock.monotonic());
    // 1. Publish and acknowledge what was already taken; 2. wait for commands awaiting PUBACK.
    await this.#within(this.#pumping ?? Promise.resolve(), left());
    await this.#within(Promise.all([...this.#commands.keys()]), left());
    for (const fail of this.#commands.values()) {
      fail(new HeraldError('HERALD_ERR_CLOSED', `MQTT bridge "${this.clientId}" closed before the broker acknowledged the command; it may still have been delivered`));
    }
    // Whatever is still unsettled is abandoned: never acknowledged, so the broker resends it.
    this.#gen++;
    this.#pending = [];
    this.#unacked = [];
    const client = this.#client;
    const clean = client.connected && Object.keys(client.outgoing).length === 0;
    const ended = client.endAsync(!clean, endSession ? { properties: { sessionExpiryInterval: 0 } } : {});
    const finished = await this.#within(ended, Math.max(left(), 1000));
    if (!finished) await client.endAsync(true).catch(() => {});
  }

  /** Resolves true when `p` settles within `ms`, false otherwise. */
  async #within(p: Promise<unknown>, ms: number): Promise<boolean> {
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<false>((r) => {
      timer = this.#clock.setTimer(() => r(false), ms);
    });
    try {
      return await Promise.race([p.then(() => true, () => true), timeout]);
    } finally {
      timer?.cancel();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #report(e: unknown): void {
    try {
      this.#o.onError?.(e);
    } catch {
      // a throwing onError must not break the bridge
    }
  }
}

function optionProblems(o: MqttBridgeOptions): string[] {
  const p: string[] = [];
  if (typeof o !== 'object' || o === null) return ['options are required'];
  try {
    const u = new URL(o.url);
    if (!['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'tls:', 'ws:', 'wss:'].includes(u.protocol)) p.push(`url must be an mqtt://, mqtts://, ws:// or wss:// URL (got ${JSON.stringify(o.url)})`);
  } catch {
    p.push(`url must be a URL such as mqtt://127.0.0.1:1883 (got ${JSON.stringify(o.url)})`);
  }
  if (typeof o.clientId !== 'string' || o.clientId.length === 0 || Buffer.byteLength(o.clientId) > 65535) p.push('clientId must be a non-empty string (it names the persistent session)');
  if (!o.transport || typeof o.transport.publish !== 'function') p.push('transport must be a Herald Transport');
  if (typeof o.topic !== 'string' || !TOPIC_NAME_RE.test(o.topic)) p.push(`topic must be a Herald topic name: 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(o.topic)})`);
  if (!Array.isArray(o.subscriptions) || o.subscriptions.length === 0) p.push('subscriptions must be a non-empty array of MQTT topic filters');
  else for (const f of o.subscriptions) {
    const fp = filterProblem(f);
    if (fp) p.push(fp);
  }
  if (o.qos !== undefined && o.qos !== 0 && o.qos !== 1) p.push(`qos must be 0 or 1 (got ${JSON.stringify(o.qos)})`);
  if (o.shareGroup !== undefined && (typeof o.shareGroup !== 'string' || o.shareGroup.length === 0 || /[/+#\u0000]/.test(o.shareGroup))) {
    p.push(`shareGroup must be a non-empty string without '/', '+', '#' (got ${JSON.stringify(o.shareGroup)})`);
  }
  const int = (name: string, v: number | undefined, min: number, max: number): void => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) p.push(`${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(v)})`);
  };
  int('sessionExpirySeconds', o.sessionExpirySeconds, 0, 0xffffffff);
  int('maxInFlight', o.maxInFlight, 1, 65535);
  int('maxBatch', o.maxBatch, 1, 100_000);
  int('reconnectPeriodMs', o.reconnectPeriodMs, 1, 3_600_000);
  int('connectTimeoutMs', o.connectTimeoutMs, 1, 3_600_000);
  int('keepaliveSeconds', o.keepaliveSeconds, 0, 65535);
  int('commandTimeoutMs', o.commandTimeoutMs, 0, 2_147_483_647);
  return p;
}
