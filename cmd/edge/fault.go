package main

import "time"

// otaFault is a fault switch for the OTA tests' release builds, so that
// the bad releases they roll back are real edge binaries. Only a test
// build sets it (-ldflags "-X main.otaFault=panic", or hang); every real
// build leaves it empty and this does nothing.
var otaFault string

func init() {
	switch otaFault {
	case "panic":
		panic("fault switch: panic at start")
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	}
}
