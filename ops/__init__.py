"""Operations tools run by on-call from a laptop or CI (`make redrive`), never deployed to Lambda."""
