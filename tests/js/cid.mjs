// Prints the CIDv1 that an independent IPFS implementation (ipfs-unixfs-importer, the
// importer js-ipfs and Helia use) gives each file named on the command line, one per line,
// with kubo's `ipfs add --cid-version=1` parameters. Used by tests/unit/test_files_cid_reference.py.
import { createReadStream } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'

// `--max-links N` (first argument) narrows the fan-out so tests reach deep DAGs with small files.
const args = process.argv.slice(2)
let maxLinks = 174
if (args[0] === '--max-links') {
  maxLinks = Number(args[1])
  args.splice(0, 2)
}

const options = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: maxLinks })
}

for (const path of args) {
  let root
  for await (const entry of importer([{ content: createReadStream(path) }], new BlackHoleBlockstore(), options)) {
    root = entry
  }
  console.log(root.cid.toString())
}
