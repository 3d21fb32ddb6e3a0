// Where the database file is: the backend `herald start` passes (HERALD_BACKEND_JSON), else
// TUTORIAL_DB, else ./tutorial.db.
export function databasePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HERALD_BACKEND_JSON) return (JSON.parse(env.HERALD_BACKEND_JSON) as { path: string }).path;
  return env.TUTORIAL_DB ?? 'tutorial.db';
}
