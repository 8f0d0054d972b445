"""Scale-out: several gateway replicas behind nginx, sharing their database and Redis."""
