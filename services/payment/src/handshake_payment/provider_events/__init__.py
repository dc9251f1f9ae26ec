"""Provider events: proof, intake of PaymentIntent facts, parking, refunds made at the provider, disputes."""
