"""handler: the Lambda edge. Everything that knows about AWS or HTTP lives here; the domain is athm_core."""
