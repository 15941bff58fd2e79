/** The bridge's version, reported by `--version` and the socket API's `hello`. */
export const VERSION = "0.1.0";

/** Version of the local socket API (see README, "Socket API"). */
export const API_PROTOCOL_VERSION = 2;
