// What the relay knows of the current mail transaction: only what the upstream accepted
// (design invariant 2). The filter's SENDER, RECIPIENTS, REMOTE and REMOTE_HELO come from here.

export class Transaction {
  private from: string | undefined;
  /** When MAIL FROM was accepted (ms since the epoch), for the accounting's %duration. */
  startedAt = Date.now();

  /** The accepted MAIL FROM path; `<>` for the null sender. */
  get sender(): string | undefined {
    return this.from;
  }
  set sender(path: string | undefined) {
    this.from = path;
    if (path !== undefined) this.startedAt = Date.now();
  }
  /** Accepted recipients, in the order the upstream accepted them. */
  readonly recipients: string[] = [];
  /** From an XFORWARD the upstream accepted (ADDR and HELO). */
  remote: string | undefined;
  remoteHelo: string | undefined;
  /** Routed mode: the client's MAIL FROM line, kept until the first RCPT dials an upstream. */
  mailLine: string | undefined;

  /** RSET, HELO/EHLO and the end of each message start afresh (spec §9). */
  reset(): void {
    this.sender = undefined;
    this.recipients.length = 0;
    this.remote = undefined;
    this.remoteHelo = undefined;
    this.mailLine = undefined;
  }
}
