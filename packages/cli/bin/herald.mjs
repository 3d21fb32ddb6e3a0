#!/usr/bin/env node
// Launcher of the `herald` command: runs src/main.ts through tsx (node --import tsx) with the same arguments.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main, ...process.argv.slice(2)], { stdio: 'inherit' });
// Ctrl-C reaches the child from the terminal (same process group): the launcher only waits for it.
process.on('SIGINT', () => {});
// A SIGTERM sent to the launcher alone is passed on.
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code, signal) => process.exit(code ?? (signal === 'SIGINT' ? 130 : 1)));
