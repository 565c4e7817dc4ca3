package outbox

// SetShrinkThresholds sets the online shrink's thresholds (compact.go) for
// a test, and returns how to put them back.
func SetShrinkThresholds(minFile, maxLive int64) (restore func()) {
	f, l := shrinkMinFile, shrinkMaxLive
	shrinkMinFile, shrinkMaxLive = minFile, maxLive
	return func() { shrinkMinFile, shrinkMaxLive = f, l }
}
