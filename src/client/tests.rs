//! Unit tests of the client's pure parts: settings, payloads, requests, output formats, JSON.
