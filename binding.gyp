{
  "targets": [
    {
      "target_name": "smtpsift",
      "sources": ["native/smtpsift.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
