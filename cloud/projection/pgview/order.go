package pgview

// OrderKey makes the projection a ledger.OrderedProjection: several of its
// figures depend on the order records are folded in (which of two
// duplicate transactions counts, a stock count against another till's
// sale, which Z of a day came later), and a rebuild folds in pos order, so
// every commit must apply it in the order of its positions.
func (p *Projection) OrderKey() string { return "projection:" + Name }
