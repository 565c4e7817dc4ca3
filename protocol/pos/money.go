package pos

import (
	"strconv"
	"strings"
)

// minorUnits lists the ISO 4217 codes whose minor unit is not the
// hundredth: the exponent of each (JPY has none, BHD has thousandths).
// Codes without a minor unit in ISO 4217 (the metals and funds such as
// XAU or XDR) are given 0.
var minorUnits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
	"RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"XAG": 0, "XAU": 0, "XDR": 0, "XPD": 0, "XPT": 0, "XSU": 0, "XUA": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// MinorUnits returns the number of decimal places of currency's minor
// unit: 2 for EUR and USD, 0 for JPY, 3 for BHD.
func MinorUnits(currency string) int {
	if n, ok := minorUnits[currency]; ok {
		return n
	}
	return 2
}

// FormatMinor writes an amount in minor units as a decimal string in the
// currency's major unit, exactly (no float): 1234 EUR is "12.34", -5 EUR
// "-0.05", 1234 JPY "1234".
func FormatMinor(minor int64, currency string) string {
	d := MinorUnits(currency)
	neg := minor < 0
	u := uint64(minor)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u, 10)
	if d > 0 {
		if len(s) <= d {
			s = strings.Repeat("0", d-len(s)+1) + s
		}
		s = s[:len(s)-d] + "." + s[len(s)-d:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
