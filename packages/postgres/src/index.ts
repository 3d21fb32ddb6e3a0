// Public surface of @herald/postgres.
