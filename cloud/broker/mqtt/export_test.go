package mqtt

// IngestWait lets tests set how long a segment waits for ingest room.
var IngestWait = &ingestWait
