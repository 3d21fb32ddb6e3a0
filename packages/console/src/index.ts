// Public surface of @herald/console.
