import { expect } from 'chai';
import { formatByteSize, parseByteSize } from '../../plugins/util/byte-size.js';
import { parseVolumeOptions } from '../../volume-driver/volume-options.js';

describe('sizes', () => {
  it('parses binary units, fractions and plain bytes', () => {
    const cases: Array<[string, number | undefined]> = [
      ['1048576', 1048576],
      ['10G', 10 * 1024 ** 3],
      ['10g', 10 * 1024 ** 3],
      ['10GB', 10 * 1024 ** 3],
      ['10GiB', 10 * 1024 ** 3],
      ['512M', 512 * 1024 ** 2],
      ['64K', 64 * 1024],
      ['2T', 2 * 1024 ** 4],
      ['1.5G', 1.5 * 1024 ** 3],
      [' 3M ', 3 * 1024 ** 2],
      ['', undefined],
      ['G', undefined],
      ['-1G', undefined],
      ['1.5', undefined],
      ['10X', undefined],
      ['1e9', undefined],
      ['99999999999T', undefined],
    ];
    for (const [text, bytes] of cases) expect(parseByteSize(text), JSON.stringify(text)).to.equal(bytes);
    expect(formatByteSize(20 * 1024 ** 3)).to.equal('20G');
    expect(formatByteSize(1536 * 1024 ** 2)).to.equal('1536M');
    expect(formatByteSize(1000)).to.equal('1000');
  });

  it('is the size volume option, as sizeBytes, at least 1M', () => {
    expect(parseVolumeOptions({ size: '10G' })).to.deep.equal({ sizeBytes: 10 * 1024 ** 3 });
    expect(parseVolumeOptions({ size: '1048576' })).to.deep.equal({ sizeBytes: 1024 * 1024 });
    for (const bad of ['1K', '0', 'big', '10 X']) expect(() => parseVolumeOptions({ size: bad }), bad).to.throw(/option size=".*" must be a size of at least 1M/);
  });
});
