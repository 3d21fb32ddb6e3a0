// Public surface of @herald/mqtt: the device bridge (not a transport), and the CloudEvents MQTT
// binding it applies, for devices and tools written in TypeScript.
export { createMqttBridge } from './bridge.ts';
export type { MqttBridge, MqttBridgeOptions, MqttBridgeStats, RejectedMessage, CommandInput, SendCommandOptions, CommandReceipt } from './bridge.ts';
export { envelopeFromMqtt, toMqttBinary, derivedId, defaultSource } from './mapping.ts';
export type { InboundMessage, InboundContext, InboundResult, OutboundMessage } from './mapping.ts';
export { defaultDeviceId, defaultType } from './filters.ts';
