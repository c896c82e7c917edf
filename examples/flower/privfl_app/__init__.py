"""A Flower app that federates with privfl: DP-SGD on the clients, SecAgg+ on the server."""
