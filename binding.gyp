{
  "targets": [
    {
      "target_name": "smtpsift",
      "sources": ["native/smtpsift.c", "native/dot.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
