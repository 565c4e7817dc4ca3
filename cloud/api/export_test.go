package api

// Route is one route of the API's table, for the external tests.
type Route struct {
	Pattern string
	Public  bool
	Admin   bool // role admin only
}

// Routes returns the API's route table (with GET /metrics), so that tests
// can walk every endpoint and a new one cannot be left out.
func Routes() []Route {
	s := &server{opts: Options{Metrics: nil}}
	var out []Route
	for _, ep := range s.endpoints() {
		out = append(out, Route{Pattern: ep.pattern, Public: ep.need == public, Admin: ep.need == admin})
	}
	return out
}
