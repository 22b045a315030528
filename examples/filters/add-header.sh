#!/bin/sh
# FilterType: pipe. Adds a header at the top of the message and passes it on.
# The message arrives on standard input; what goes to standard output is sent on.
printf 'X-Filtered-By: smtpsift example add-header.sh\r\n'
exec cat
