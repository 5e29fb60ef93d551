"""kqi: the command line over kqi's JSON API (`kqi --help`)."""
