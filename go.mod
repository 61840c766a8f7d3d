module sbcd

go 1.26
