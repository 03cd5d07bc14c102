// Command double serves the provider doubles of package providertest as
// a program, for tests outside this module (test/clients): it prints
// "listening ADDR" and serves until its stdin closes. The key it accepts
// is GANTRY_PROVIDER_DOUBLE_KEY (empty: any).
package main

import (
	"os"

	"github.com/gantry/gantry/external/providertest"
)

func main() {
	os.Setenv(providertest.EnvServe, "1")
	providertest.Main()
}
