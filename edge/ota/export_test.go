package ota

// SetCrashHook makes Install call f after each of its steps.
func SetCrashHook(l *Layout, f func(step string)) { l.crash = f }

// SupervisorCommit is what a supervisor does at the end of a healthy
// probation: commit the release and record ota.committed.
func SupervisorCommit(s *Supervisor) (*Pending, error) {
	s.defaults()
	return s.commit()
}

// SetDownloadCrashHook makes Fetch call f after each of its steps.
func SetDownloadCrashHook(d *Downloader, f func(step string)) { d.crash = f }
