// Public surface of @herald/cli.
