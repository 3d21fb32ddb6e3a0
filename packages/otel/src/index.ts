// Public surface of @herald/otel.
