/**
 * A throwaway RabbitMQ node for restart tests, so the shared broker other suites use is never
 * disturbed: its own node name, AMQP and distribution ports, Mnesia and log folders, config
 * file and an empty plugin list, started from the installed server's own script
 * (`/usr/lib/rabbitmq/bin/rabbitmq-server`, which stops the node gracefully on SIGTERM). It
 * registers with the machine's epmd (starting one if none runs). About 4 s to start here.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { freePort, PrivateServer } from '@herald/testkit';

export const RABBITMQ_SERVER_SCRIPT = process.env.HERALD_RABBITMQ_SERVER ?? '/usr/lib/rabbitmq/bin/rabbitmq-server';

/** Why a private node cannot run here, or undefined when it can. */
export function privateNodeSkipReason(): string | undefined {
  return existsSync(RABBITMQ_SERVER_SCRIPT) ? undefined : `no RabbitMQ server script at ${RABBITMQ_SERVER_SCRIPT} (set HERALD_RABBITMQ_SERVER)`;
}

export interface PrivateRabbitMq {
  readonly url: string;
  readonly port: number;
  readonly nodeName: string;
  /** Graceful stop (SIGTERM) and start on the same port and data folder; resolves when AMQP accepts connections. */
  restart(): Promise<void>;
  /** Stops the node and deletes its folder. */
  dispose(): Promise<void>;
}

export async function startPrivateRabbitMq(): Promise<PrivateRabbitMq> {
  const distPort = await freePort();
  const nodeName = `herald-${randomUUID().slice(0, 8)}@localhost`;
  const server = await PrivateServer.start({
    name: 'rabbitmq',
    command: 'env',
    startTimeoutMs: 60_000,
    args: (port, dir) => {
      writeFileSync(join(dir, 'rabbitmq.conf'), `listeners.tcp.local = 127.0.0.1:${port}\n`);
      writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
      writeFileSync(join(dir, 'rabbitmq-env.conf'), '');
      return [
        `HOME=${dir}`,
        `RABBITMQ_CONF_ENV_FILE=${join(dir, 'rabbitmq-env.conf')}`,
        `RABBITMQ_NODENAME=${nodeName}`,
        `RABBITMQ_NODE_PORT=${port}`,
        `RABBITMQ_DIST_PORT=${distPort}`,
        `RABBITMQ_MNESIA_BASE=${join(dir, 'mnesia')}`,
        `RABBITMQ_LOG_BASE=${join(dir, 'log')}`,
        `RABBITMQ_CONFIG_FILE=${join(dir, 'rabbitmq.conf')}`,
        `RABBITMQ_ENABLED_PLUGINS_FILE=${join(dir, 'enabled_plugins')}`,
        `RABBITMQ_PID_FILE=${join(dir, 'rabbitmq.pid')}`,
        'ERL_EPMD_ADDRESS=127.0.0.1',
        // Empty: the script then runs the VM in the background and turns SIGTERM into a clean stop.
        'RABBITMQ_ALLOW_INPUT=',
        RABBITMQ_SERVER_SCRIPT,
      ];
    },
  });
  const pidFile = join(server.dir, 'rabbitmq.pid');
  /** The Erlang VM's pid, so it can be killed if the script in front of it was. */
  const vmPid = (): number | undefined => {
    try {
      const n = Number(readFileSync(pidFile, 'utf8').trim());
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  };
  const killVm = (pid: number | undefined): void => {
    if (pid === undefined) return;
    try {
      // Only our own VM (pids get reused): its command line names our node.
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(nodeName.split('@')[0]!)) return;
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  return {
    url: `amqp://guest:guest@127.0.0.1:${server.port}`,
    port: server.port,
    nodeName,
    async restart() {
      const pid = vmPid();
      await server.stop('SIGTERM');
      killVm(pid); // normally gone already; a stop that timed out must not leave the VM on the port
      await server.restart();
    },
    async dispose() {
      const pid = vmPid();
      await server.stop('SIGTERM');
      killVm(pid);
      await server.dispose();
    },
  };
}
