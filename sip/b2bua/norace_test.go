//go:build !race

package b2bua

const raceEnabled = false
