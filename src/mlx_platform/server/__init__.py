"""The HTTP transport: routes, auth and the error envelope. No business rules live here."""
