// Public surface of @herald/mqtt: the device bridge (not a transport).
export { createMqttBridge } from './bridge.ts';
export type { MqttBridge, MqttBridgeOptions, MqttBridgeStats, RejectedMessage, CommandInput, SendCommandOptions, CommandReceipt } from './bridge.ts';
export { envelopeFromMqtt, toMqttBinary, derivedId, defaultSource, dataFrom } from './mapping.ts';
export type { InboundMessage, InboundContext, InboundResult, OutboundMessage } from './mapping.ts';
export { matchFilter, filterProblem, topicProblem, defaultDeviceId, defaultType } from './filters.ts';
export type { FilterMatch } from './filters.ts';
