"""Zoo configs: one YAML per model variant (installed as package data ``facedeblur.zoo_configs``)."""
