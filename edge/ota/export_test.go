package ota

// SetCrashHook makes Install call f after each of its steps.
func SetCrashHook(l *Layout, f func(step string)) { l.crash = f }
