// Sends one test message through the demo proxy: node dist/examples/send-test.js [port]

import { createTransport } from 'nodemailer';

const port = Number(process.argv[2] ?? 10025);
const transport = createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
const info = await transport.sendMail({
  from: 'alice@example.org',
  to: 'bob@example.net',
  subject: 'Hello through smtpsift',
  text: 'This message went through smtpsiftd.\n.A line that starts with a dot.\n',
});
process.stdout.write(`sent ${info.messageId}: ${info.response}\n`);
