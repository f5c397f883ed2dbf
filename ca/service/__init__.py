"""The CA's network service (gRPC issuance, bundle publishing); not built yet."""
