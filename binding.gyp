{
  "targets": [
    {
      "target_name": "smtpsift",
      "sources": ["native/smtpsift.c", "native/dot.c", "native/spawn.c", "native/cells.c", "native/pump.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
