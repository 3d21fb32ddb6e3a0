// Entry of the `herald` command: runs one command and exits with its code (see output.ts).
import { runCli } from './program.ts';

process.exitCode = await runCli(process.argv.slice(2));
