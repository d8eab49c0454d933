"""The browser viewer: one page (Resources/Web/) served by `malenia serve` at `/`, and the few
`/v1` routes it needs beyond the engine API (sample CT, DICOM zip, CT image, parse, probability
map, downloads). `malenia view [CT]` starts a server and opens the page."""
