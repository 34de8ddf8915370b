"""Consortium identity: genesis and hospital certificates, user certificates, roles and
certified security levels. Nothing here ever sees a user's real name except
``registry`` (the registering hospital's private, off-chain store)."""
