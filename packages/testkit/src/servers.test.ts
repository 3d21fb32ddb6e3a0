import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { freePort, isListening, PrivateServer } from './servers.ts';

test('isListening tells an open port from a closed one', async () => {
  const port = await freePort();
  assert.equal(await isListening(port), false);
  const srv = createServer().listen(port, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  assert.equal(await isListening(port), true);
  await new Promise((r) => srv.close(r));
});

test('a private server starts on its own port, restarts on the same port, and is disposed', async () => {
  // `node -e` stands in for a server binary: it listens on the port it is given.
  const server = await PrivateServer.start({
    name: 'fake',
    command: process.execPath,
    args: (port) => ['-e', `require('net').createServer().listen(${port}, '127.0.0.1')`],
  });
  assert.equal(await isListening(server.port), true);
  await server.stop();
  assert.equal(await isListening(server.port), false);
  await server.restart();
  assert.equal(await isListening(server.port), true);
  await server.dispose();
  assert.equal(await isListening(server.port), false);
});
