module github.com/gantry/gantry/api

go 1.26
