package ledger

// For the external tests: the queries whose plans they examine.
var (
	EventsQuery   = eventsQuery
	DupCheckQuery = dupCheckQuery
)
